// `lowbit tokenize`: the token ids of a text, space-separated on one line (--pieces: one token per
// line with its vocabulary string). The text comes as `run` reads a prompt: -p, -f FILE (- for
// stdin), or a piped stdin.
#include <filesystem>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "cli/options.h"
#include "core/error.h"
#include "tokenizer/tokenizer.h"

namespace lowbit::cli {

namespace {

struct TokenizeFlags {
  ModelFlags model;  // only the folder is used (tokenizer.json)
  std::string tokenizer_file;
  PromptSource prompt;
  bool no_special = false;
  bool pieces = false;
};

int tokenize(TokenizeFlags f) {
  if (!f.model.model_dir.empty() && !f.tokenizer_file.empty())
    throw UsageError("give -m DIR or --tokenizer FILE, not both");
  if (f.tokenizer_file.empty()) resolve_model_dir(f.model);
  const std::string path = f.tokenizer_file.empty()
                               ? (std::filesystem::path(f.model.model_dir) / "tokenizer.json").string()
                               : f.tokenizer_file;
  const PromptText text = read_prompt(f.prompt);
  const Tokenizer tok = Tokenizer::from_file(path);
  const std::vector<int32_t> ids = tok.encode(text.text, !f.no_special);
  if (!f.pieces) {
    fmt::print("{}\n", fmt::join(ids, " "));
    return 0;
  }
  // The vocabulary string of each id, JSON-quoted so spaces, markers and control bytes show.
  for (int32_t id : ids)
    fmt::print("{}\t{}\n", id,
               nlohmann::json(tok.id_to_token(id)).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
  return 0;
}

}  // namespace

void add_tokenize_command(CLI::App& app, int& exit_code) {
  auto flags = std::make_shared<TokenizeFlags>();
  CLI::App* cmd = app.add_subcommand("tokenize", "print the token ids of a text");
  cmd->add_option("-m,--model", flags->model.model_dir,
                  "model folder holding tokenizer.json (default: the bundled stories260K)");
  cmd->add_option("--tokenizer", flags->tokenizer_file, "a tokenizer.json file");
  cmd->add_option("-p,--prompt", flags->prompt.prompt, "text to tokenize");
  cmd->add_option("-f,--file", flags->prompt.file,
                  "read the text from a file (- = stdin), minus one trailing newline; without -p/-f a piped stdin "
                  "is the text");
  cmd->add_flag("--no-special", flags->no_special, "do not add special tokens (BOS/EOS)");
  cmd->add_flag("--pieces", flags->pieces, "one token per line: its id, a tab, its vocabulary string (JSON-quoted)");
  cmd->callback([flags, &exit_code] { exit_code = tokenize(*flags); });
}

}  // namespace lowbit::cli
