// lowbit's entry point: parses the command line, runs one subcommand, and turns every error
// into one line on stderr and an exit code (0 ok, 1 bad input/runtime, 2 usage, 130 SIGINT).
#include <cstdio>
#include <exception>

#include <CLI/CLI.hpp>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include "cli/commands.h"
#include "core/error.h"
#include "lowbit_config.h"

int main(int argc, char** argv) {
  auto logger = spdlog::stderr_color_mt("lowbit");
  logger->set_pattern("%^%l%$: %v");
  spdlog::set_default_logger(logger);

  CLI::App app{"lowbit: run Llama and Falcon models with quantized weights on the CPU or a CUDA GPU"};
  const char* build = LOWBIT_EMULATED_GPU ? " (emulated cuda: --device cuda runs the kernels on the CPU, for tests)"
                      : LOWBIT_HAVE_CUDA  ? " (cuda)"
                                          : " (cpu only)";
  app.set_version_flag("--version", std::string("lowbit ") + LOWBIT_VERSION + build);
  app.require_subcommand(1);
  app.fallthrough();  // -q works before or after the subcommand
  bool quiet = false;
  app.add_flag("-q,--quiet", quiet, "log warnings and errors only");
  int exit_code = 0;
  lowbit::cli::add_run_command(app, exit_code);
  lowbit::cli::add_info_command(app, exit_code);
  lowbit::cli::add_tokenize_command(app, exit_code);
  lowbit::cli::add_convert_command(app, exit_code);
  lowbit::cli::add_ppl_command(app, exit_code);
  lowbit::cli::add_make_model_command(app, exit_code);
  lowbit::cli::add_bench_command(app, exit_code);
  lowbit::cli::add_sweep_command(app, exit_code);
  lowbit::cli::add_batch_command(app, exit_code);
  lowbit::cli::add_report_command(app, exit_code);
  app.parse_complete_callback([&] {
    if (quiet) spdlog::set_level(spdlog::level::warn);
  });

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::fprintf(stderr, "error: %s (see --help)\n", e.what());
    return int(lowbit::ExitCode::usage);
  } catch (const lowbit::Error& e) {
    std::fflush(stdout);
    std::fprintf(stderr, "error: %s\n", e.what());
    return int(e.code());
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr, "error: out of host memory\n");
    return int(lowbit::ExitCode::input);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: internal: %s\n", e.what());
    return 3;
  }
  return exit_code;
}
