// `lowbit convert-llama2c`: a llama2.c checkpoint and vocabulary to a Hugging Face folder.
#include <filesystem>

#include <spdlog/spdlog.h>

#include "cli/commands.h"
#include "convert/llama2c.h"
#include "core/error.h"

namespace lowbit::cli {

void add_convert_command(CLI::App& app, int& exit_code) {
  struct Flags {
    std::string checkpoint, tokenizer, out;
    bool force = false;
  };
  auto flags = std::make_shared<Flags>();
  CLI::App* cmd = app.add_subcommand("convert-llama2c", "convert a llama2.c checkpoint (v0) to a Hugging Face folder");
  cmd->add_option("--checkpoint", flags->checkpoint, "llama2.c model .bin")->required();
  cmd->add_option("--tokenizer", flags->tokenizer, "llama2.c tokenizer .bin")->required();
  cmd->add_option("-o,--output,--out", flags->out, "output folder")->required();
  cmd->add_flag("--force", flags->force, "write into a non-empty output folder (its files are overwritten)");
  cmd->callback([flags, &exit_code] {
    namespace fs = std::filesystem;
    // As make-model: a folder that holds anything is the user's, and is not overwritten unasked.
    std::error_code ec;
    if (fs::is_directory(flags->out, ec) && !fs::is_empty(flags->out, ec) && !flags->force)
      throw UsageError(fmt::format("-o/--output {}: folder is not empty (add --force to overwrite)", flags->out));
    convert_llama2c(flags->checkpoint, flags->tokenizer, flags->out);
    spdlog::info("wrote {}", flags->out);
    exit_code = 0;
  });
}

}  // namespace lowbit::cli
