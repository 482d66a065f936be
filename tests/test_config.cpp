#include <catch2/catch.hpp>

#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "core/error.h"
#include "model/config.h"
#include "test_fixtures.h"

using namespace lowbit;
namespace fs = std::filesystem;
using lowbit::test::TempDir;

namespace {


// parse_config must throw InputError whose one-line message names the file and every part.
void require_config_error(const std::string& json_text, std::initializer_list<std::string> parts) {
  try {
    parse_config(json_text, "cfg/config.json");
  } catch (const InputError& e) {
    const std::string message = e.what();
    INFO("config: " << json_text << "\nmessage: " << message);
    CHECK(message.find('\n') == std::string::npos);
    CHECK_THAT(message, Catch::Contains("cfg/config.json"));
    for (const std::string& part : parts) CHECK_THAT(message, Catch::Contains(part));
    return;
  }
  FAIL("expected InputError for " << json_text);
}

// TinyLlama-1.1B-Chat-v1.0's config.json: GQA (32 heads, 4 KV heads), untied.
const char* kTinyLlama = R"({
  "architectures": ["LlamaForCausalLM"], "attention_bias": false, "bos_token_id": 1,
  "eos_token_id": 2, "hidden_act": "silu", "hidden_size": 2048, "initializer_range": 0.02,
  "intermediate_size": 5632, "max_position_embeddings": 2048, "model_type": "llama",
  "num_attention_heads": 32, "num_hidden_layers": 22, "num_key_value_heads": 4,
  "pretraining_tp": 1, "rms_norm_eps": 1e-05, "rope_scaling": null, "rope_theta": 10000.0,
  "tie_word_embeddings": false, "torch_dtype": "bfloat16", "transformers_version": "4.35.0",
  "use_cache": true, "vocab_size": 32000})";

// Llama-3.2-1B-Instruct: llama3 rope scaling, tied embeddings, explicit head_dim, eos list.
const char* kLlama32 = R"({
  "architectures": ["LlamaForCausalLM"], "attention_bias": false, "attention_dropout": 0.0,
  "bos_token_id": 128000, "eos_token_id": [128001, 128008, 128009], "head_dim": 64,
  "hidden_act": "silu", "hidden_size": 2048, "initializer_range": 0.02,
  "intermediate_size": 8192, "max_position_embeddings": 131072, "mlp_bias": false,
  "model_type": "llama", "num_attention_heads": 32, "num_hidden_layers": 16,
  "num_key_value_heads": 8, "pretraining_tp": 1, "rms_norm_eps": 1e-05,
  "rope_scaling": {"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                   "original_max_position_embeddings": 8192, "rope_type": "llama3"},
  "rope_theta": 500000.0, "tie_word_embeddings": true, "torch_dtype": "bfloat16",
  "use_cache": true, "vocab_size": 128256})";

// tiiuae/falcon-7b (current transformers form).
const char* kFalcon7b = R"({
  "alibi": false, "apply_residual_connection_post_layernorm": false,
  "architectures": ["FalconForCausalLM"], "attention_dropout": 0.0, "bias": false,
  "bos_token_id": 11, "eos_token_id": 11, "hidden_dropout": 0.0, "hidden_size": 4544,
  "initializer_range": 0.02, "layer_norm_epsilon": 1e-05, "model_type": "falcon",
  "multi_query": true, "new_decoder_architecture": false, "num_attention_heads": 71,
  "num_hidden_layers": 32, "parallel_attn": true, "torch_dtype": "bfloat16",
  "transformers_version": "4.27.4", "use_cache": true, "vocab_size": 65024})";

// tiiuae/falcon-40b (current transformers form): new decoder architecture, 8 KV heads.
const char* kFalcon40b = R"({
  "alibi": false, "apply_residual_connection_post_layernorm": false,
  "architectures": ["FalconForCausalLM"], "attention_dropout": 0.0, "bias": false,
  "bos_token_id": 11, "eos_token_id": 11, "hidden_dropout": 0.0, "hidden_size": 8192,
  "initializer_range": 0.02, "layer_norm_epsilon": 1e-05, "model_type": "falcon",
  "new_decoder_architecture": true, "num_attention_heads": 128, "num_hidden_layers": 60,
  "num_kv_heads": 8, "parallel_attn": true, "torch_dtype": "bfloat16",
  "transformers_version": "4.27.4", "use_cache": true, "vocab_size": 65024})";

}  // namespace

TEST_CASE("Llama config with grouped-query attention", "[config]") {
  const ModelConfig c = parse_config(kTinyLlama, "config.json");
  CHECK(c.arch == Arch::Llama);
  CHECK(c.model_type == "llama");
  CHECK(c.torch_dtype == "bfloat16");
  CHECK(c.vocab_size == 32000);
  CHECK(c.hidden_size == 2048);
  CHECK(c.intermediate_size == 5632);
  CHECK(c.n_layers == 22);
  CHECK(c.n_heads == 32);
  CHECK(c.n_kv_heads == 4);
  CHECK(c.head_dim == 64);
  CHECK(c.q_dim() == 2048);
  CHECK(c.kv_dim() == 256);
  CHECK(c.max_position_embeddings == 2048);
  CHECK(c.norm_eps == 1e-5f);
  CHECK(c.norm == NormKind::RMSNorm);
  CHECK(c.activation == Activation::SwiGLU);
  CHECK(c.rope_theta == 10000.0f);
  CHECK(c.rope_scaling.type == RopeScaling::Type::None);
  CHECK_FALSE(c.tie_word_embeddings);
  CHECK_FALSE(c.attention_bias);
  CHECK_FALSE(c.mlp_bias);
  CHECK_FALSE(c.parallel_attention);
  CHECK(c.mlp_has_norm);
  CHECK(c.qkv_layout == QkvLayout::separate);
  CHECK(c.bos_token_id == 1);
  CHECK(c.eos_token_ids == std::vector<int32_t>{2});
}

TEST_CASE("Llama 3.2 config: llama3 rope, tied, head_dim, eos list", "[config]") {
  const ModelConfig c = parse_config(kLlama32, "config.json");
  CHECK(c.n_kv_heads == 8);
  CHECK(c.head_dim == 64);
  CHECK(c.tie_word_embeddings);
  CHECK(c.rope_theta == 500000.0f);
  CHECK(c.rope_scaling.type == RopeScaling::Type::Llama3);
  CHECK(c.rope_scaling.factor == 32.0f);
  CHECK(c.rope_scaling.low_freq_factor == 1.0f);
  CHECK(c.rope_scaling.high_freq_factor == 4.0f);
  CHECK(c.rope_scaling.original_max_position_embeddings == 8192);
  CHECK(c.max_position_embeddings == 131072);
  CHECK(c.bos_token_id == 128000);
  CHECK(c.eos_token_ids == std::vector<int32_t>{128001, 128008, 128009});
}

TEST_CASE("Llama config: defaults, explicit head_dim, linear rope, biases", "[config]") {
  const ModelConfig minimal = parse_config(
      R"({"model_type": "llama", "hidden_size": 64, "intermediate_size": 172,
          "num_hidden_layers": 5, "num_attention_heads": 8, "vocab_size": 512})",
      "config.json");
  CHECK(minimal.arch == Arch::Llama);
  CHECK(minimal.n_kv_heads == 8);       // defaults to num_attention_heads
  CHECK(minimal.head_dim == 8);         // hidden / heads
  CHECK(minimal.norm_eps == 1e-6f);     // transformers' LlamaConfig default
  CHECK(minimal.rope_theta == 10000.0f);
  CHECK_FALSE(minimal.tie_word_embeddings);
  CHECK(minimal.bos_token_id == 1);
  CHECK(minimal.eos_token_ids == std::vector<int32_t>{2});

  // head_dim given: heads need not divide the hidden size (e.g. Mistral-Nemo style shapes).
  const ModelConfig explicit_head = parse_config(
      R"({"architectures": ["LlamaForCausalLM"], "hidden_size": 100, "intermediate_size": 256,
          "num_hidden_layers": 2, "num_attention_heads": 3, "num_key_value_heads": 1,
          "head_dim": 32, "vocab_size": 10, "attention_bias": true, "mlp_bias": true,
          "rope_scaling": {"type": "linear", "factor": 4.0}})",
      "config.json");
  CHECK(explicit_head.head_dim == 32);
  CHECK(explicit_head.q_dim() == 96);
  CHECK(explicit_head.kv_dim() == 32);
  CHECK(explicit_head.attention_bias);
  CHECK(explicit_head.mlp_bias);
  CHECK(explicit_head.rope_scaling.type == RopeScaling::Type::Linear);
  CHECK(explicit_head.rope_scaling.factor == 4.0f);

  const ModelConfig rope_type_linear = parse_config(
      R"({"model_type": "llama", "hidden_size": 64, "intermediate_size": 172,
          "num_hidden_layers": 5, "num_attention_heads": 8, "vocab_size": 512,
          "rope_scaling": {"rope_type": "linear", "factor": 2}})",
      "config.json");
  CHECK(rope_type_linear.rope_scaling.type == RopeScaling::Type::Linear);
  CHECK(rope_type_linear.rope_scaling.factor == 2.0f);
}

TEST_CASE("Falcon-7B config: multi-query, parallel attention", "[config]") {
  const ModelConfig c = parse_config(kFalcon7b, "config.json");
  CHECK(c.arch == Arch::Falcon);
  CHECK(c.model_type == "falcon");
  CHECK(c.hidden_size == 4544);
  CHECK(c.n_heads == 71);
  CHECK(c.head_dim == 64);
  CHECK(c.n_kv_heads == 1);
  CHECK(c.n_layers == 32);
  CHECK(c.intermediate_size == 4 * 4544);
  CHECK(c.norm == NormKind::LayerNorm);
  CHECK(c.activation == Activation::GELU);
  CHECK(c.norm_eps == 1e-5f);
  CHECK(c.qkv_layout == QkvLayout::stacked);  // multi_query
  CHECK(c.parallel_attention);
  CHECK_FALSE(c.linear_bias);
  CHECK_FALSE(c.mlp_has_norm);  // one input_layernorm shared by attention and MLP
  CHECK(c.tie_word_embeddings);  // FalconConfig's default
  CHECK(c.bos_token_id == 11);
  CHECK(c.eos_token_ids == std::vector<int32_t>{11});
  CHECK(c.max_position_embeddings == 2048);
}

TEST_CASE("Falcon-40B config: new decoder architecture", "[config]") {
  const ModelConfig c = parse_config(kFalcon40b, "config.json");
  CHECK(c.qkv_layout == QkvLayout::per_kv_group);  // new_decoder_architecture
  CHECK(c.parallel_attention);
  CHECK(c.n_heads == 128);
  CHECK(c.n_kv_heads == 8);
  CHECK(c.head_dim == 64);
  CHECK(c.mlp_has_norm);  // ln_attn and ln_mlp
  CHECK(c.n_layers == 60);
  CHECK(c.kv_dim() == 512);

  const ModelConfig one_ln = parse_config(
      R"({"architectures": ["FalconForCausalLM"], "hidden_size": 64, "num_attention_heads": 4,
          "num_hidden_layers": 2, "vocab_size": 100, "new_decoder_architecture": true,
          "num_kv_heads": 2, "num_ln_in_parallel_attn": 1, "ffn_hidden_size": 96,
          "bias": true, "rope_theta": 500000.0, "tie_word_embeddings": false})",
      "config.json");
  CHECK(one_ln.parallel_attention);
  CHECK_FALSE(one_ln.mlp_has_norm);
  CHECK(one_ln.intermediate_size == 96);
  CHECK(one_ln.linear_bias);
  CHECK(one_ln.rope_theta == 500000.0f);
  CHECK_FALSE(one_ln.tie_word_embeddings);

  const ModelConfig sequential = parse_config(
      R"({"model_type": "falcon", "hidden_size": 64, "num_attention_heads": 4,
          "num_hidden_layers": 2, "vocab_size": 100, "multi_query": false,
          "parallel_attn": false})",
      "config.json");
  CHECK(sequential.n_kv_heads == 4);
  CHECK_FALSE(sequential.parallel_attention);
  CHECK(sequential.mlp_has_norm);
  CHECK(sequential.qkv_layout == QkvLayout::per_head);
}

TEST_CASE("Falcon RefinedWeb names (pre-transformers RW configs)", "[config]") {
  // tiiuae/falcon-7b's original config.json
  const ModelConfig rw7b = parse_config(R"({
    "alibi": false, "apply_residual_connection_post_layernorm": false,
    "architectures": ["RWForCausalLM"], "attention_dropout": 0.0, "bias": false,
    "bos_token_id": 11, "eos_token_id": 11, "hidden_dropout": 0.0, "hidden_size": 4544,
    "initializer_range": 0.02, "layer_norm_epsilon": 1e-05, "model_type": "RefinedWebModel",
    "multi_query": true, "n_head": 71, "n_layer": 32, "parallel_attn": true,
    "torch_dtype": "bfloat16", "use_cache": true, "vocab_size": 65024})",
                                        "config.json");
  CHECK(rw7b.arch == Arch::Falcon);
  CHECK(rw7b.n_heads == 71);
  CHECK(rw7b.n_layers == 32);
  CHECK(rw7b.n_kv_heads == 1);
  CHECK(rw7b.qkv_layout == QkvLayout::stacked);

  // tiiuae/falcon-40b's original config.json: RefinedWeb implies the new architecture.
  const ModelConfig rw40b = parse_config(R"({
    "alibi": false, "apply_residual_connection_post_layernorm": false,
    "architectures": ["RWForCausalLM"], "attention_dropout": 0.0, "bias": false,
    "bos_token_id": 11, "eos_token_id": 11, "hidden_dropout": 0.0, "hidden_size": 8192,
    "initializer_range": 0.02, "layer_norm_epsilon": 1e-05, "model_type": "RefinedWeb",
    "n_head": 128, "n_head_kv": 8, "n_layer": 60, "parallel_attn": true,
    "torch_dtype": "bfloat16", "use_cache": true, "vocab_size": 65024})",
                                         "config.json");
  CHECK(rw40b.qkv_layout == QkvLayout::per_kv_group);
  CHECK(rw40b.n_heads == 128);
  CHECK(rw40b.n_kv_heads == 8);
  CHECK(rw40b.n_layers == 60);
  CHECK(rw40b.mlp_has_norm);
}

TEST_CASE("Falcon with alibi is refused", "[config]") {
  // tiiuae/falcon-rw-1b
  require_config_error(R"({"alibi": true, "architectures": ["FalconForCausalLM"],
      "bias": true, "hidden_size": 2048, "model_type": "falcon", "multi_query": false,
      "new_decoder_architecture": false, "num_attention_heads": 32, "num_hidden_layers": 24,
      "parallel_attn": false, "vocab_size": 50304})",
                       {"alibi", "Falcon with alibi is not supported"});
}

TEST_CASE("bad configs name the file and the field", "[config]") {
  const std::string base = R"("architectures": ["LlamaForCausalLM"], "intermediate_size": 172,
      "num_hidden_layers": 5, "vocab_size": 512)";
  require_config_error("{" + base + R"(, "num_attention_heads": 8})", {"hidden_size", "missing"});
  require_config_error("{" + base + R"(, "hidden_size": 0, "num_attention_heads": 8})",
                       {"hidden_size", "positive"});
  require_config_error("{" + base + R"(, "hidden_size": -64, "num_attention_heads": 8})",
                       {"hidden_size", "positive"});
  require_config_error("{" + base + R"(, "hidden_size": "64", "num_attention_heads": 8})",
                       {"hidden_size", "integer"});
  require_config_error("{" + base + R"(, "hidden_size": 64, "num_attention_heads": 7})",
                       {"num_attention_heads", "does not divide"});
  require_config_error(
      "{" + base + R"(, "hidden_size": 64, "num_attention_heads": 8, "num_key_value_heads": 3})",
      {"num_key_value_heads", "does not divide"});
  require_config_error(
      "{" + base + R"(, "hidden_size": 64, "num_attention_heads": 8,
          "rope_scaling": {"rope_type": "yarn", "factor": 4.0}})",
      {"rope_scaling.rope_type", "yarn"});
  require_config_error(
      "{" + base + R"(, "hidden_size": 64, "num_attention_heads": 8,
          "rope_scaling": {"rope_type": "llama3", "factor": 8.0}})",
      {"rope_scaling.low_freq_factor", "missing"});
  require_config_error(
      "{" + base + R"(, "hidden_size": 64, "num_attention_heads": 8, "tie_word_embeddings": 1})",
      {"tie_word_embeddings"});
  require_config_error(
      R"({"architectures": ["MistralForCausalLM"], "model_type": "mistral"})",
      {"architectures", "MistralForCausalLM"});
  require_config_error(R"({"model_type": "gpt2"})", {"model_type", "gpt2"});
  require_config_error(R"({"hidden_size": 64})", {"architectures"});
  require_config_error(R"({"architectures": ["LlamaForCausalLM"], )", {"not valid JSON"});
  require_config_error("[1, 2]", {"not a JSON object"});
  require_config_error(
      R"({"architectures": ["FalconForCausalLM"], "hidden_size": 64, "num_attention_heads": 4,
          "num_hidden_layers": 2, "vocab_size": 100, "activation": "relu"})",
      {"activation", "relu"});
  require_config_error(
      R"({"architectures": ["FalconForCausalLM"], "hidden_size": 64, "num_attention_heads": 4,
          "num_hidden_layers": 2, "vocab_size": 100, "new_decoder_architecture": true,
          "num_kv_heads": 3})",
      {"num_kv_heads", "does not divide"});
  require_config_error(
      R"({"architectures": ["FalconForCausalLM"], "num_attention_heads": 4,
          "num_hidden_layers": 2, "vocab_size": 100})",
      {"hidden_size", "missing"});
}

TEST_CASE("load_config reads a folder; a missing config.json is an InputError", "[config]") {
  TempDir dir;
  REQUIRE_THROWS_AS(load_config(dir.path.string()), InputError);
  REQUIRE_THROWS_WITH(load_config(dir.path.string()), Catch::Contains("config.json"));
  dir.write("config.json", kTinyLlama);
  CHECK(load_config(dir.path.string()).n_layers == 22);
  dir.write("config.json", "{not json");
  REQUIRE_THROWS_WITH(load_config(dir.path.string()),
                      Catch::Contains((dir.path / "config.json").string()) &&
                          Catch::Contains("not valid JSON"));
}

TEST_CASE("generation_config.json defaults", "[config]") {
  TempDir dir;
  const GenerationDefaults none = load_generation_defaults(dir.path.string());
  CHECK_FALSE(none.do_sample);
  CHECK(none.temperature == 1.0f);
  CHECK(none.top_k == 50);
  CHECK(none.max_new_tokens == -1);
  CHECK(none.eos_token_ids.empty());

  // Llama-3.2-1B-Instruct's generation_config.json
  dir.write("generation_config.json", R"({"bos_token_id": 128000, "do_sample": true,
      "eos_token_id": [128001, 128008, 128009], "temperature": 0.6, "top_p": 0.9,
      "transformers_version": "4.45.0.dev0"})");
  const GenerationDefaults g = load_generation_defaults(dir.path.string());
  CHECK(g.do_sample);
  CHECK(g.temperature == 0.6f);
  CHECK(g.top_p == 0.9f);
  CHECK(g.top_k == 50);
  CHECK(g.eos_token_ids == std::vector<int32_t>{128001, 128008, 128009});

  dir.write("generation_config.json", R"({"top_k": 20, "min_p": 0.05, "repetition_penalty": 1.1,
      "max_new_tokens": 128, "eos_token_id": 2, "temperature": null})");
  const GenerationDefaults h = load_generation_defaults(dir.path.string());
  CHECK(h.top_k == 20);
  CHECK(h.min_p == 0.05f);
  CHECK(h.temperature == 1.0f);  // null means "not set"
  CHECK(h.repetition_penalty == 1.1f);
  CHECK(h.max_new_tokens == 128);
  CHECK(h.eos_token_ids == std::vector<int32_t>{2});

  dir.write("generation_config.json", R"({"top_p": "high"})");
  REQUIRE_THROWS_WITH(load_generation_defaults(dir.path.string()),
                      Catch::Contains("generation_config.json") && Catch::Contains("top_p"));
}
