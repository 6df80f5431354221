"""cc_grpc_proto: one line per .proto, using Debian's protoc and grpc_cpp_plugin.

Native proto_library needs @com_google_protobuf, which cannot be fetched offline, so a
genrule runs the system protoc. Imports resolve relative to the package directory, so
`proto/fanin/v1/fanin.proto` in package //proto is imported as "fanin/v1/fanin.proto"
and its headers are included as "fanin/v1/fanin.pb.h".
"""

def cc_grpc_proto(name, src, deps = [], visibility = None):
    """Generates C++ messages and gRPC stubs for `src` as two cc_library targets.

    - `<name>_cc_proto`: <src>.pb.{h,cc}, the messages only. Depends on protobuf and
      `deps` (the message libraries of imported .proto files), never on gRPC. Code
      that only builds or parses messages depends on this one.
    - `<name>_cc_grpc`: <src>.grpc.pb.{h,cc}, the service stubs. Depends on
      `<name>_cc_proto` and gRPC. Servers and clients of the service depend on it.

    Example:
        cc_grpc_proto(name = "fanin", src = "fanin/v1/fanin.proto")
        # //proto:fanin_cc_proto and //proto:fanin_cc_grpc
    """
    if not src.endswith(".proto"):
        fail("cc_grpc_proto: src must end with .proto, got " + src)
    base = src[:-len(".proto")]
    pkg = native.package_name()
    protoc = [
        "protoc",
        "--proto_path=" + (pkg or "."),
    ]
    native.genrule(
        name = name + "_cc_proto_gen",
        srcs = [src],
        outs = [base + ".pb.h", base + ".pb.cc"],
        cmd = " ".join(protoc + [
            "--cpp_out=$(GENDIR)/" + pkg,
            "$(location " + src + ")",
        ]),
    )
    native.genrule(
        name = name + "_cc_grpc_gen",
        srcs = [src],
        outs = [base + ".grpc.pb.h", base + ".grpc.pb.cc"],
        cmd = " ".join(protoc + [
            "--grpc_out=$(GENDIR)/" + pkg,
            "--plugin=protoc-gen-grpc=$$(command -v grpc_cpp_plugin)",
            "$(location " + src + ")",
        ]),
    )
    native.cc_library(
        name = name + "_cc_proto",
        srcs = [base + ".pb.cc"],
        hdrs = [base + ".pb.h"],
        includes = ["."],
        deps = deps + ["@system//:protobuf"],
        visibility = visibility,
    )
    native.cc_library(
        name = name + "_cc_grpc",
        srcs = [base + ".grpc.pb.cc"],
        hdrs = [base + ".grpc.pb.h"],
        includes = ["."],
        deps = [
            ":" + name + "_cc_proto",
            "@system//:grpc",
        ],
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
