// Entry point of the CPU test binaries (Catch2's implementation: catch_impl.cpp).
#include "catch_session.h"

int main(int argc, char** argv) { return lowbit::test::run_catch_session(argc, argv); }
