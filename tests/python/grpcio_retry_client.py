"""Refreshes token chains with grpcio, a gRPC client nobody here wrote, and no retry code of its
own: whatever retrying happens is grpcio's, driven by the service config it is given.

Reads one JSON request on stdin, writes one JSON result on stdout; tests/tests/grpcio_retry.rs
runs it as a subprocess and makes every assertion. Request:

  {"target": "127.0.0.1:PORT", "service_config": path of deploy/grpc/service-config.json or
   null (the control: no service config at all), "client_id": ..., "client_secret": ...,
   "refresh_tokens": [one starting refresh token per chain], "steps": 30}

Each chain runs in its own thread over one shared channel (as one process with several
sessions would) and makes `steps` refreshes, each exactly one stub call, each presenting the
refresh token of the previous answer. A failed call ends its chain: retrying it is not this
client's business. Result:

  {"service_config_loaded": bool,
   "chains": [{"family_ids": [family_id of each answer],
               "replayed": [the `replayed` flag of each answer],
               "refresh_token": the last refresh token the chain holds,
               "failure": null or {"step": i, "code": "UNAVAILABLE", "details": ...}}]}

The stubs are generated from proto/tokens/v1/tokens.proto into a temporary directory with
grpcio-tools' protoc at every run; nothing generated is kept.
"""

import json
import os
import subprocess
import sys
import tempfile
import threading

import grpc

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PROTO_ROOT = os.path.join(REPO, "proto")
PROTO = "tokens/v1/tokens.proto"


def generate_stubs(out_dir):
    """Runs protoc (grpcio-tools; it supplies the well-known types) and imports the result."""
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{PROTO_ROOT}",
            f"--python_out={out_dir}",
            f"--grpc_python_out={out_dir}",
            PROTO,
        ],
        check=True,
    )
    sys.path.insert(0, out_dir)
    from tokens.v1 import tokens_pb2, tokens_pb2_grpc  # noqa: E402

    return tokens_pb2, tokens_pb2_grpc


def channel_options(service_config_path):
    options = [("grpc.enable_retries", 1)]
    if service_config_path is not None:
        with open(service_config_path, encoding="utf-8") as f:
            options.append(("grpc.service_config", f.read()))
    return options


def run_chain(stub, pb, req, refresh_token, result):
    for step in range(req["steps"]):
        request = pb.RefreshTokenPairRequest(
            client_id=req["client_id"],
            client_secret=req["client_secret"],
            refresh_token=refresh_token,
        )
        try:
            # One stub call. The deadline, if any, and every retry come from the service config.
            pair = stub.RefreshTokenPair(request)
        except grpc.RpcError as err:
            result["failure"] = {"step": step, "code": err.code().name, "details": err.details()}
            break
        result["family_ids"].append(pair.family_id)
        result["replayed"].append(pair.replayed)
        refresh_token = pair.refresh_token
    result["refresh_token"] = refresh_token


def main():
    req = json.load(sys.stdin)
    with tempfile.TemporaryDirectory(prefix="grpcio-stubs-") as out_dir:
        pb, pb_grpc = generate_stubs(out_dir)
        options = channel_options(req["service_config"])
        with grpc.insecure_channel(req["target"], options=options) as channel:
            grpc.channel_ready_future(channel).result(timeout=30)
            stub = pb_grpc.TokenServiceStub(channel)
            results = [
                {"family_ids": [], "replayed": [], "refresh_token": None, "failure": None}
                for _ in req["refresh_tokens"]
            ]
            threads = [
                threading.Thread(target=run_chain, args=(stub, pb, req, token, results[i]))
                for i, token in enumerate(req["refresh_tokens"])
            ]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
    json.dump(
        {"service_config_loaded": req["service_config"] is not None, "chains": results},
        sys.stdout,
    )


if __name__ == "__main__":
    main()
