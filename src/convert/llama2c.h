// Converts a llama2.c "v0" checkpoint and its tokenizer into a Hugging Face Llama folder
// (config.json, model.safetensors in F32, tokenizer.json, tokenizer_config.json) that both lowbit
// and transformers load.
#pragma once
#include <string>
#include <utility>
#include <vector>

namespace lowbit {

// Writes <out_dir>/{config.json, model.safetensors, tokenizer.json, tokenizer_config.json},
// creating out_dir if needed. Throws InputError naming the file at fault when the checkpoint's
// header, its size, or the tokenizer file is inconsistent.
void convert_llama2c(const std::string& checkpoint_path, const std::string& tokenizer_path,
                     const std::string& out_dir);

// llama2.c (like Meta's Llama) rotates adjacent pairs (2i, 2i+1) of each head; Hugging Face Llama
// rotates halves (i, i + head_dim/2). Reorders the rows of a q or k projection w (n_heads *
// head_dim rows of `cols` floats) per head so HF's rotation computes the same thing: output row
// h*head_dim + j*head_dim/2 + i takes input row h*head_dim + 2*i + j (j in {0, 1}), as
// transformers' convert_llama_weights_to_hf.py `permute` does.
std::vector<float> permute_rows_for_hf_rope(const float* w, int n_heads, int head_dim, int cols);

// BPE merges for a SentencePiece vocabulary, ordered as transformers' SentencePieceExtractor
// orders them when given the piece scores: every split of a piece into two vocabulary pieces is
// a merge; merges sort by the merged piece's score, then the left and right lengths (in code
// points), all descending; equal keys keep vocabulary order (per piece: by left id, right id).
std::vector<std::pair<std::string, std::string>> sentencepiece_merges(
    const std::vector<std::pair<std::string, float>>& pieces);

}  // namespace lowbit
