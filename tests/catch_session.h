// Runs the Catch2 session (tests/catch_impl.cpp); for the test binaries' main().
#pragma once

namespace lowbit::test {
int run_catch_session(int argc, char** argv);
}
