// `lowbit convert-llama2c` (a llama2.c checkpoint and vocabulary) and `lowbit convert-gguf` (a
// llama.cpp GGUF file) to a Hugging Face folder.
#include <filesystem>

#include <spdlog/spdlog.h>

#include "cli/commands.h"
#include "convert/gguf_convert.h"
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

  struct GgufFlags {
    std::string input, out, dtype = "f32";
    bool force = false;
  };
  auto gguf = std::make_shared<GgufFlags>();
  CLI::App* g = app.add_subcommand("convert-gguf", "convert a llama.cpp GGUF file (Llama architecture) to a Hugging Face folder");
  g->add_option("file", gguf->input, "the .gguf file")->required();
  g->add_option("-o,--output,--out", gguf->out, "output folder")->required();
  g->add_option("--dtype", gguf->dtype,
                "dtype of model.safetensors: f32 (the dequantized values exactly), bf16 or f16 (half the size, rounded)")
      ->capture_default_str();
  g->add_flag("--force", gguf->force, "overwrite the output files if the folder already holds them");
  g->callback([gguf, &exit_code] {
    GgufConvertOptions options;
    if (gguf->dtype == "f32") options.dtype = DType::F32;
    else if (gguf->dtype == "bf16") options.dtype = DType::BF16;
    else if (gguf->dtype == "f16") options.dtype = DType::F16;
    else throw UsageError("--dtype " + gguf->dtype + ": use f32, bf16 or f16");
    options.force = gguf->force;
    convert_gguf(gguf->input, gguf->out, options);
    spdlog::info("wrote {}", gguf->out);
    exit_code = 0;
  });
}

}  // namespace lowbit::cli
