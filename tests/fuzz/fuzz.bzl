"""fanin_fuzz_test: one libFuzzer target, two builds.

    fanin_fuzz_test(name = "tokens", srcs = ["tokens_fuzz.cc"], deps = [...])

makes
  - `tokens_fuzz_test`: a cc_test (every build, part of //...) that replays the
    seed corpus in corpus/tokens/ through LLVMFuzzerTestOneInput with a small
    driver, so a crash or a failed check on a seed fails the ordinary suite;
  - `tokens_fuzzer`: the libFuzzer binary (tag "manual"), built with
    `bazel build --config=fuzz //tests/fuzz:tokens_fuzzer` (clang,
    -fsanitize=fuzzer,address) and run by tests/fuzz/run.sh.
"""

def fanin_fuzz_test(name, srcs, deps = []):
    corpus = native.glob(["corpus/" + name + "/*"])
    native.cc_test(
        name = name + "_fuzz_test",
        size = "small",
        srcs = srcs + ["replay_main.cc"],
        args = ["$(location " + c + ")" for c in corpus],
        data = corpus,
        deps = deps,
    )
    native.cc_binary(
        name = name + "_fuzzer",
        srcs = srcs,
        linkopts = ["-fsanitize=fuzzer"],
        tags = ["manual"],
        testonly = True,
        deps = deps,
    )
