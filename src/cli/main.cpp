// lowbit's entry point: parses the command line, runs one subcommand, and turns every error
// into one line on stderr and an exit code (0 ok, 1 bad input/runtime, 2 usage, 130 SIGINT).
#include <algorithm>
#include <cstdio>
#include <exception>
#include <regex>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include "cli/commands.h"
#include "cli/suggest.h"
#include "core/error.h"
#include "core/version.h"
#include "lowbit_config.h"

namespace {

// Every spelling of every option of `app` ("--temperature", "--temp", "-n").
std::vector<std::string> option_names(const CLI::App& app) {
  std::vector<std::string> names;
  for (const CLI::Option* o : app.get_options()) {
    for (const std::string& l : o->get_lnames()) names.push_back("--" + l);
    for (const std::string& s : o->get_snames()) names.push_back("-" + s);
  }
  return names;
}

std::vector<std::string> subcommand_names(const CLI::App& app) {
  std::vector<std::string> names;
  for (const CLI::App* sub : app.get_subcommands([](const CLI::App*) { return true; })) names.push_back(sub->get_name());
  return names;
}

// The subcommand the user asked for: the first argument that is not a flag (only flags without
// values, -q and --help/--version, may come before it). Empty when there is none.
std::string requested_subcommand(int argc, char** argv) {
  for (int i = 1; i < argc; ++i)
    if (argv[i][0] != '-') return argv[i];
  return "";
}

// One line for an argument CLI11 did not expect: the flag's nearest name, or the stray value.
std::string explain_extras(CLI::App& app) {
  const CLI::App* sub = app.get_subcommands().empty() ? &app : app.get_subcommands().front();
  const std::string where = sub == &app ? "lowbit" : "lowbit " + sub->get_name();
  std::vector<std::string> names = option_names(*sub);
  if (sub != &app) {
    const std::vector<std::string> top = option_names(app);
    names.insert(names.end(), top.begin(), top.end());
  }
  for (const std::string& arg : app.remaining(true)) {
    if (arg.size() > 1 && arg[0] == '-') {
      const std::string flag = arg.substr(0, arg.find('='));
      return fmt::format("{}: unknown flag {}{}", where, flag, lowbit::cli::did_you_mean(flag, names));
    }
  }
  const std::vector<std::string> rest = app.remaining(true);
  return fmt::format("{}: unexpected argument '{}' (a flag that takes no value, or a value without its flag?)", where,
                     rest.empty() ? std::string() : rest.front());
}

// CLI11 words conversion errors value first ("The value abc is not an allowed value for
// --seed"); lowbit names the flag first, as in all its other errors.
std::string flag_first(const std::string& message) {
  static const std::regex not_allowed("^The value (.*) is not an allowed value for (\\S+)$");
  static const std::regex could_not("^Could not convert: (\\S+) = (.*)$");
  std::smatch m;
  if (std::regex_match(message, m, not_allowed)) return fmt::format("{}: '{}' is not a valid value", m[2].str(), m[1].str());
  if (std::regex_match(message, m, could_not)) return fmt::format("{}: '{}' is not a valid value", m[1].str(), m[2].str());
  return message;
}

}  // namespace

int main(int argc, char** argv) {
  auto logger = spdlog::stderr_color_mt("lowbit");
  logger->set_pattern("%^%l%$: %v");
  spdlog::set_default_logger(logger);

  CLI::App app{"lowbit: run Llama and Falcon models with quantized weights on the CPU or a CUDA GPU"};
  const char* build = LOWBIT_EMULATED_GPU ? " (emulated cuda: --device cuda runs the kernels on the CPU, for tests)"
                      : LOWBIT_HAVE_CUDA  ? " (cuda)"
                                          : " (cpu only)";
  app.set_version_flag("--version", std::string("lowbit ") + lowbit::lowbit_version() + " (commit " +
                                        lowbit::lowbit_commit() + ")" + build);
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
    const std::string sub = requested_subcommand(argc, argv);
    const std::vector<std::string> commands = subcommand_names(app);
    if (!sub.empty() && std::find(commands.begin(), commands.end(), sub) == commands.end())
      throw lowbit::UsageError(fmt::format("unknown command '{}'{} (lowbit --help lists them)", sub,
                                           lowbit::cli::did_you_mean(sub, commands)));
    app.parse(argc, argv);
  } catch (const CLI::ExtrasError&) {
    std::fprintf(stderr, "error: %s (see --help)\n", explain_extras(app).c_str());
    return int(lowbit::ExitCode::usage);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::fprintf(stderr, "error: %s (see --help)\n", flag_first(e.what()).c_str());
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
