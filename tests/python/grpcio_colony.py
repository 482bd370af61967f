#!/usr/bin/env python3
"""A stock gRPC C-core client (Python grpcio) against a coral-colony.

Like grpcio_client.py for the agent: no generated code, the API only as
server reflection (v1alpha) describes it, and a channel made as a user makes
it: ``grpc.insecure_channel(target)``. Prints one JSON object with what it
saw; tests/tests/colony.rs asserts on it.

    python3 tests/python/grpcio_colony.py unix:///run/coral/colony.sock
"""

import json
import sys

import grpc
from google.protobuf import descriptor_pool, message_factory
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

API = "coral.colony.v1.ColonyService"
HEALTH = "grpc.health.v1.Health"


def method(channel, pool, service, name):
    descriptor = pool.FindServiceByName(service).methods_by_name[name]
    request = message_factory.GetMessageClass(descriptor.input_type)
    response = message_factory.GetMessageClass(descriptor.output_type)
    call = channel.unary_unary(
        f"/{service}/{name}",
        request_serializer=request.SerializeToString,
        response_deserializer=response.FromString,
    )
    return request, call


def main():
    target = sys.argv[1]
    out = {"grpcio": grpc.__version__}
    with grpc.insecure_channel(target) as channel:
        database = ProtoReflectionDescriptorDatabase(channel)
        pool = descriptor_pool.DescriptorPool(database)
        out["services"] = sorted(database.get_services())
        request, list_agents = method(channel, pool, API, "ListAgents")
        agents = list_agents(request(), timeout=10)
        out["agents"] = [
            {"node": a.node, "agent_id": a.agent_id, "kinds": len(a.kinds)}
            for a in agents.agents
        ]
        request, list_taps = method(channel, pool, API, "ListFleetTaps")
        out["fleet_taps"] = len(list_taps(request(), timeout=10).taps)
        request, check = method(channel, pool, HEALTH, "Check")
        status = check(request(service=API), timeout=10)
        out["health"] = status.DESCRIPTOR.fields_by_name["status"].enum_type.values_by_number[
            status.status
        ].name
    print(json.dumps(out, sort_keys=True))


if __name__ == "__main__":
    try:
        main()
    except grpc.RpcError as e:
        print(f"RPC failed: {e.code().name}: {e.details()}", file=sys.stderr)
        sys.exit(1)
