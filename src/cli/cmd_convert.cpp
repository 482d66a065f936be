// `lowbit convert-llama2c`: a llama2.c checkpoint and vocabulary to a Hugging Face folder.
#include <spdlog/spdlog.h>

#include "cli/commands.h"
#include "convert/llama2c.h"

namespace lowbit::cli {

void add_convert_command(CLI::App& app, int& exit_code) {
  struct Flags {
    std::string checkpoint, tokenizer, out;
  };
  auto flags = std::make_shared<Flags>();
  CLI::App* cmd = app.add_subcommand("convert-llama2c", "convert a llama2.c checkpoint (v0) to a Hugging Face folder");
  cmd->add_option("--checkpoint", flags->checkpoint, "llama2.c model .bin")->required();
  cmd->add_option("--tokenizer", flags->tokenizer, "llama2.c tokenizer .bin")->required();
  cmd->add_option("--out", flags->out, "output folder")->required();
  cmd->callback([flags, &exit_code] {
    convert_llama2c(flags->checkpoint, flags->tokenizer, flags->out);
    spdlog::info("wrote {}", flags->out);
    exit_code = 0;
  });
}

}  // namespace lowbit::cli
