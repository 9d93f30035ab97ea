"""A gRPC server for the proxy's end-to-end tests (grpcio, raw bytes, no generated code).

Prints its port, then serves until killed. Methods of test.Echo:
  Unary   echoes the request, with trailing metadata x-trailer: t1;
  Stream  answers N messages "0".."N-1" for a request "N";
  Fail    aborts with PERMISSION_DENIED "no entry";
  Bidi    answers each message with "bidi:" and the message.
"""
from concurrent import futures

import grpc


def unary(request, context):
    context.set_trailing_metadata((("x-trailer", "t1"),))
    return b"echo:" + request


def stream(request, context):
    for i in range(int(request)):
        yield str(i).encode()


def fail(request, context):
    context.abort(grpc.StatusCode.PERMISSION_DENIED, "no entry")


def bidi(requests, context):
    for m in requests:
        yield b"bidi:" + m


handler = grpc.method_handlers_generic_handler(
    "test.Echo",
    {
        "Unary": grpc.unary_unary_rpc_method_handler(unary),
        "Stream": grpc.unary_stream_rpc_method_handler(stream),
        "Fail": grpc.unary_unary_rpc_method_handler(fail),
        "Bidi": grpc.stream_stream_rpc_method_handler(bidi),
    },
)
server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
server.add_generic_rpc_handlers((handler,))
port = server.add_insecure_port("127.0.0.1:0")
server.start()
print(port, flush=True)
server.wait_for_termination()
