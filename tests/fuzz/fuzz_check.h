// FUZZ_CHECK(cond, what): a property every input must keep. On failure it
// prints what broke and aborts, which libFuzzer reports as a crash (with the
// input saved) and the seed replay test reports as a failure.
#ifndef FANIN_TESTS_FUZZ_FUZZ_CHECK_H_
#define FANIN_TESTS_FUZZ_FUZZ_CHECK_H_

#include <cstdio>
#include <cstdlib>
#include <string>

#define FUZZ_CHECK(cond, what)                                             \
  do {                                                                     \
    if (!(cond)) {                                                         \
      std::fprintf(stderr, "%s:%d: FUZZ_CHECK(%s) failed: %s\n", __FILE__, \
                   __LINE__, #cond, std::string(what).c_str());            \
      std::abort();                                                        \
    }                                                                      \
  } while (0)

#endif  // FANIN_TESTS_FUZZ_FUZZ_CHECK_H_
