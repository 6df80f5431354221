"""cc_grpc_proto: one line per .proto, using Debian's protoc and grpc_cpp_plugin.

Native proto_library needs @com_google_protobuf, which cannot be fetched offline, so a
genrule runs the system protoc. Imports resolve relative to the package directory, so
`proto/fanin/v1/fanin.proto` in package //proto is imported as "fanin/v1/fanin.proto"
and its headers are included as "fanin/v1/fanin.pb.h".
"""

def cc_grpc_proto(name, src, deps = [], visibility = None):
    """Generates <src>.pb.{h,cc} and <src>.grpc.pb.{h,cc} and wraps them in cc_library `name`.

    Example:
        cc_grpc_proto(name = "fanin_cc_grpc", src = "fanin/v1/fanin.proto")
    """
    if not src.endswith(".proto"):
        fail("cc_grpc_proto: src must end with .proto, got " + src)
    base = src[:-len(".proto")]
    outs = [base + ".pb.h", base + ".pb.cc", base + ".grpc.pb.h", base + ".grpc.pb.cc"]
    pkg = native.package_name()
    native.genrule(
        name = name + "_gen",
        srcs = [src],
        outs = outs,
        cmd = " ".join([
            "protoc",
            "--proto_path=" + (pkg or "."),
            "--cpp_out=$(GENDIR)/" + pkg,
            "--grpc_out=$(GENDIR)/" + pkg,
            "--plugin=protoc-gen-grpc=$$(command -v grpc_cpp_plugin)",
            "$(location " + src + ")",
        ]),
    )
    native.cc_library(
        name = name,
        srcs = [base + ".pb.cc", base + ".grpc.pb.cc"],
        hdrs = [base + ".pb.h", base + ".grpc.pb.h"],
        includes = ["."],
        deps = deps + ["@system//:grpc"],
        visibility = visibility,
    )

def py_grpc_proto(name, src, visibility = None):
    """Generates <src>_pb2.py and <src>_pb2_grpc.py with the system protoc and grpc_python_plugin."""
    base = src[:-len(".proto")]
    pkg = native.package_name()
    native.genrule(
        name = name,
        srcs = [src],
        outs = [base + "_pb2.py", base + "_pb2_grpc.py"],
        cmd = " ".join([
            "protoc",
            "--proto_path=" + (pkg or "."),
            "--python_out=$(GENDIR)/" + pkg,
            "--grpc_python_out=$(GENDIR)/" + pkg,
            "--plugin=protoc-gen-grpc_python=$$(command -v grpc_python_plugin)",
            "$(location " + src + ")",
        ]),
        visibility = visibility,
    )
