// `lowbit tokenize`: the token ids of a text, space-separated on one line.
#include <filesystem>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "cli/commands.h"
#include "core/error.h"
#include "tokenizer/tokenizer.h"

namespace lowbit::cli {

namespace {

struct TokenizeFlags {
  std::string model_dir, tokenizer_file, prompt;
  bool no_special = false;
};

int tokenize(const TokenizeFlags& f) {
  if (f.model_dir.empty() == f.tokenizer_file.empty())
    throw UsageError("give exactly one of -m DIR or --tokenizer FILE");
  std::string path = f.tokenizer_file.empty()
                         ? (std::filesystem::path(f.model_dir) / "tokenizer.json").string()
                         : f.tokenizer_file;
  Tokenizer tok = Tokenizer::from_file(path);
  fmt::print("{}\n", fmt::join(tok.encode(f.prompt, !f.no_special), " "));
  return 0;
}

}  // namespace

void add_tokenize_command(CLI::App& app, int& exit_code) {
  auto flags = std::make_shared<TokenizeFlags>();
  CLI::App* cmd = app.add_subcommand("tokenize", "print the token ids of a text");
  cmd->add_option("-m,--model", flags->model_dir, "model folder holding tokenizer.json");
  cmd->add_option("--tokenizer", flags->tokenizer_file, "a tokenizer.json file");
  cmd->add_option("-p,--prompt", flags->prompt, "text to tokenize")->required();
  cmd->add_flag("--no-special", flags->no_special, "do not add special tokens (BOS/EOS)");
  cmd->callback([flags, &exit_code] { exit_code = tokenize(*flags); });
}

}  // namespace lowbit::cli
