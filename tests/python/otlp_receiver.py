#!/usr/bin/env python3
"""An OTLP/gRPC metrics receiver built on the upstream OpenTelemetry
protobuf definitions (the ``opentelemetry-proto`` package) and grpcio.

It serves ``opentelemetry.proto.collector.metrics.v1.MetricsService`` on
127.0.0.1 (port 0 unless given: the kernel picks a free one), prints
``ready PORT``, then one line per Export call: the request as proto3 JSON
(``json_format.MessageToJson``, on one line). tests/tests/metrics.rs starts
it and reads what the agent pushed. It runs until stdin closes or it is
killed.

    python3 tests/python/otlp_receiver.py [--port N]
"""

import argparse
import sys
import threading
from concurrent import futures

import grpc
from google.protobuf import json_format
from opentelemetry.proto.collector.metrics.v1 import (
    metrics_service_pb2,
    metrics_service_pb2_grpc,
)

lock = threading.Lock()


class Receiver(metrics_service_pb2_grpc.MetricsServiceServicer):
    def Export(self, request, context):
        line = json_format.MessageToJson(request, indent=None)
        with lock:
            sys.stdout.write(line + "\n")
            sys.stdout.flush()
        return metrics_service_pb2.ExportMetricsServiceResponse()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(Receiver(), server)
    port = server.add_insecure_port(f"127.0.0.1:{args.port}")
    server.start()
    print(f"ready {port}", flush=True)
    # Until the test closes our stdin (or kills us).
    sys.stdin.read()
    server.stop(grace=1)


if __name__ == "__main__":
    main()
