// A property a fuzz target asserts: its failure aborts, which libFuzzer (and the corpus replay
// test) reports as a crash with the input that caused it.
#pragma once
#include <cstdio>
#include <cstdlib>

#define QCAST_FUZZ_CHECK(cond)                                                                  \
  do {                                                                                          \
    if (!(cond)) {                                                                              \
      std::fprintf(stderr, "%s:%d: fuzz property failed: %s\n", __FILE__, __LINE__, #cond);     \
      std::abort();                                                                             \
    }                                                                                           \
  } while (0)
