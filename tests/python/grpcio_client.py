#!/usr/bin/env python3
"""A stock gRPC C-core client (Python grpcio) against a coral-agent.

It knows nothing of the agent's API but what server reflection tells it: no
generated code. It asks reflection (v1alpha, which stock grpcio-reflection
speaks) for the schema, builds message classes from the reflected
descriptors, and calls the agent over the target it is given, a
``unix:///path`` socket or ``host:port``, with a channel made exactly as a
user would make it: ``grpc.insecure_channel(target)``, no options.

Prints one JSON object with what it saw; tests/tests/interop.rs asserts on
it. Exits non-zero, with the error, if a call fails.

    python3 tests/python/grpcio_client.py unix:///run/coral/agent.sock [--collect]
"""

import argparse
import json
import os
import sys
import time

import grpc
from google.protobuf import descriptor_pool, json_format, message_factory
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

API = "coral.agent.v1.EbpfService"
HEALTH = "grpc.health.v1.Health"
REFLECTION_V1 = "grpc.reflection.v1.ServerReflection"


class Reflected:
    """Methods of the services the server describes, as callables."""

    def __init__(self, channel):
        self.channel = channel
        self.database = ProtoReflectionDescriptorDatabase(channel)
        self.pool = descriptor_pool.DescriptorPool(self.database)

    def services(self):
        return sorted(self.database.get_services())

    def method(self, service, name):
        """(request class, callable) for service/name."""
        descriptor = self.pool.FindServiceByName(service).methods_by_name[name]
        request = message_factory.GetMessageClass(descriptor.input_type)
        response = message_factory.GetMessageClass(descriptor.output_type)
        path = f"/{service}/{name}"
        kind = {
            (False, False): self.channel.unary_unary,
            (False, True): self.channel.unary_stream,
            (True, True): self.channel.stream_stream,
        }[(descriptor.client_streaming, descriptor.server_streaming)]
        call = kind(
            path,
            request_serializer=request.SerializeToString,
            response_deserializer=response.FromString,
        )
        return request, call

    def enum_value(self, enum, name):
        return self.pool.FindEnumTypeByName(enum).values_by_name[name].number


def enum_name(message, field):
    """The name of an enum field's value, from the message's descriptor."""
    values = message.DESCRIPTOR.fields_by_name[field].enum_type.values_by_number
    return values[getattr(message, field)].name


def health(api, out):
    request, check = api.method(HEALTH, "Check")
    out["health_check"] = {
        name or "(server)": enum_name(check(request(service=name), timeout=10), "status")
        for name in ["", API]
    }
    try:
        check(request(service="no.such.Service"), timeout=10)
        out["health_check_unknown"] = "OK"
    except grpc.RpcError as e:
        out["health_check_unknown"] = e.code().name

    request, watch = api.method(HEALTH, "Watch")
    known = watch(request(service=API), timeout=10)
    out["watch_known_first"] = enum_name(next(known), "status")
    known.cancel()

    # The protocol: SERVICE_UNKNOWN, and the call stays open. It ends here
    # only by this client's deadline.
    hold = 2.0
    started = time.monotonic()
    unknown = watch(request(service="no.such.Service"), timeout=hold)
    watch_unknown = {"first": enum_name(next(unknown), "status")}
    try:
        extra = next(unknown)
        watch_unknown["then"] = "message " + enum_name(extra, "status")
    except StopIteration:
        watch_unknown["then"] = "closed by the server"
    except grpc.RpcError as e:
        watch_unknown["then"] = e.code().name
    watch_unknown["open_s"] = round(time.monotonic() - started, 2)
    out["watch_unknown"] = watch_unknown


def reflection_v1(api, out):
    """The v1 reflection service, its messages also built from reflection."""
    request, info = api.method(REFLECTION_V1, "ServerReflectionInfo")
    responses = info(iter([request(list_services="")]), timeout=10)
    first = next(responses)
    out["reflection_v1_services"] = sorted(
        s.name for s in first.list_services_response.service
    )


def collect(api, out, duration_s):
    """syscall-stats on this very process, streamed until it ends."""
    request, start = api.method(API, "StartCollector")
    req = request()
    req.spec.kind = api.enum_value(
        "coral.agent.v1.CollectorKind", "COLLECTOR_KIND_SYSCALL_STATS"
    )
    req.spec.duration_ns = int(duration_s * 1e9)
    req.spec.filter.pids.append(os.getpid())
    req.spec.syscall_stats.interval_ns = 200_000_000
    started = start(req, timeout=30)
    collector = started.collector
    out["started_state"] = enum_name(collector, "state")

    request, stream = api.method(API, "StreamEvents")
    records, gaps, final, syscalls, ended = 0, 0, False, 0, None
    for event in stream(request(id=collector.id, from_seq=1), timeout=duration_s + 30):
        which = event.WhichOneof("event")
        if which == "record":
            record = event.record
            records += 1
            if getattr(record, "final"):
                final = True
                syscalls = sum(s.count for s in record.syscall_stats.syscalls)
        elif which == "gap":
            gaps += 1
        elif which == "ended":
            ended = enum_name(event.ended, "state")
    out["stream"] = {
        "records": records,
        "gaps": gaps,
        "final": final,
        "final_syscalls": syscalls,
        "ended": ended,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("target", help="unix:///path/agent.sock or host:port")
    parser.add_argument(
        "--collect",
        action="store_true",
        help="also start syscall-stats on this process and stream it (needs BPF)",
    )
    parser.add_argument("--duration", type=float, default=2.0)
    args = parser.parse_args()

    out = {"grpcio": grpc.__version__, "target": args.target}
    # Exactly what a user writes: no channel options.
    with grpc.insecure_channel(args.target) as channel:
        api = Reflected(channel)
        out["services"] = api.services()
        request, caps = api.method(API, "GetCapabilities")
        capabilities = caps(request(), timeout=10)
        out["caps"] = {
            "agent_id": capabilities.agent_id,
            "kinds": len(capabilities.kinds),
            "limits": json_format.MessageToDict(capabilities.limits),
        }
        health(api, out)
        reflection_v1(api, out)
        if args.collect:
            collect(api, out, args.duration)
    print(json.dumps(out, sort_keys=True))


if __name__ == "__main__":
    try:
        main()
    except grpc.RpcError as e:
        print(f"RPC failed: {e.code().name}: {e.details()}", file=sys.stderr)
        sys.exit(1)
