"""A gRPC client for the proxy's end-to-end tests: calls every method of test.Echo (see
server.py) at TARGET with AUTHORITY, over cleartext HTTP/2, and prints what came back as JSON."""
import json
import sys

import grpc

target, authority = sys.argv[1], sys.argv[2]
channel = grpc.insecure_channel(target, options=[("grpc.default_authority", authority)])
out = {}


def code(e):
    return {"code": e.code().name, "details": e.details()}


try:
    reply, call = channel.unary_unary("/test.Echo/Unary").with_call(b"hi", timeout=5)
    out["unary"] = reply.decode()
    out["trailers"] = {k: v for k, v in call.trailing_metadata()}
    out["stream"] = [m.decode() for m in channel.unary_stream("/test.Echo/Stream")(b"5", timeout=5)]
    out["bidi"] = [
        m.decode()
        for m in channel.stream_stream("/test.Echo/Bidi")(iter([b"a", b"b", b"c"]), timeout=5)
    ]
except grpc.RpcError as e:
    out["error"] = code(e)
try:
    channel.unary_unary("/test.Echo/Fail")(b"", timeout=5)
    out["fail"] = "succeeded"
except grpc.RpcError as e:
    out["fail"] = code(e)
print(json.dumps(out))
