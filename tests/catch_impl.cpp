// Catch2's implementation, compiled once for every test binary. Each binary's own main()
// (catch_main.cpp, gpu_main.cpp, smollm2_main.cpp) calls run_catch_session(): Catch2 v2 declares
// Catch::Session only inside its implementation part.
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include "catch_session.h"

int lowbit::test::run_catch_session(int argc, char** argv) { return Catch::Session().run(argc, argv); }
