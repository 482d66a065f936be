// Tokenizer tests: token ids and decoded text equal Hugging Face `tokenizers` on a corpus of
// hard strings for every vocabulary under tests/data/tokenizers (goldens made by
// tools/make_tokenizer_goldens.py), streaming decode, and error reporting.
#include <catch2/catch.hpp>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "test_util.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/utf8.h"

namespace fs = std::filesystem;
using lowbit::InputError;
using lowbit::Tokenizer;

namespace {

fs::path tokenizers_dir() { return fs::path(lowbit::test::data_dir()) / "tokenizers"; }

bool has_tokenizer(const fs::path& dir) {
  return fs::exists(dir / "tokenizer.json") || fs::exists(dir / "variant.json");
}

// Vocabularies with a golden file, sorted by name.
std::vector<std::string> vocabularies() {
  std::vector<std::string> names;
  for (const auto& entry : fs::directory_iterator(tokenizers_dir()))
    if (fs::exists(entry.path() / "golden.json") && has_tokenizer(entry.path()))
      names.push_back(entry.path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

nlohmann::json read_json(const fs::path& path) {
  std::ifstream in(path);
  REQUIRE(in.good());
  return nlohmann::json::parse(in);
}

// The vocabulary's tokenizer.json; a variant (variant.json: {"base", "replace"}) is rebuilt
// from its base's file into a temporary file, as tools/make_tokenizer_goldens.py does.
std::string tokenizer_path(const std::string& name) {
  const fs::path dir = tokenizers_dir() / name;
  if (fs::exists(dir / "tokenizer.json")) return (dir / "tokenizer.json").string();
  const nlohmann::json variant = read_json(dir / "variant.json");
  nlohmann::json merged = read_json(tokenizers_dir() / variant.at("base").get<std::string>() / "tokenizer.json");
  for (const auto& [key, value] : variant.at("replace").items()) merged[key] = value;
  const fs::path path = fs::temp_directory_path() / ("lowbit-tokenizer-" + name + ".json");
  std::ofstream(path, std::ios::binary) << merged.dump();
  return path.string();
}

Tokenizer load(const std::string& name) { return Tokenizer::from_file(tokenizer_path(name)); }

bool is_valid_utf8(const std::string& text) {
  try {
    lowbit::utf8::validate(text, "stream output");
    return true;
  } catch (const InputError&) {
    return false;
  }
}

std::string write_temp(const std::string& name, const std::string& contents) {
  const fs::path path = fs::temp_directory_path() / name;
  std::ofstream(path, std::ios::binary) << contents;
  return path.string();
}

}  // namespace

TEST_CASE("the required vocabularies have goldens", "[tokenizer]") {
  const auto names = vocabularies();
  for (const char* required : {"llama2", "llama3", "falcon"})
    CHECK(std::find(names.begin(), names.end(), required) != names.end());
}

TEST_CASE("encode and decode equal Hugging Face on the golden corpus", "[tokenizer]") {
  for (const std::string& name : vocabularies()) {
    const Tokenizer tok = load(name);
    const nlohmann::json golden = read_json(tokenizers_dir() / name / "golden.json");
    size_t passed = 0, total = 0;
    for (const auto& c : golden.at("cases")) {
      const std::string text = c.at("text").get<std::string>();
      const auto ids_special = c.at("ids_special").get<std::vector<int32_t>>();
      const auto ids_plain = c.at("ids_plain").get<std::vector<int32_t>>();
      INFO(name << ": text '" << text << "'");
      const auto got_special = tok.encode(text, true);
      const auto got_plain = tok.encode(text, false);
      const std::string decoded_special = tok.decode(ids_special, true);
      const std::string decoded_plain = tok.decode(ids_plain, true);
      const std::string decoded_kept = tok.decode(ids_special, false);
      CHECK(got_special == ids_special);
      CHECK(got_plain == ids_plain);
      CHECK(decoded_special == c.at("decoded_special").get<std::string>());
      CHECK(decoded_plain == c.at("decoded_plain").get<std::string>());
      CHECK(decoded_kept == c.at("decoded_special_kept").get<std::string>());
      total += 5;
      passed += (got_special == ids_special) + (got_plain == ids_plain) +
                (decoded_special == c.at("decoded_special").get<std::string>()) +
                (decoded_plain == c.at("decoded_plain").get<std::string>()) +
                (decoded_kept == c.at("decoded_special_kept").get<std::string>());
    }
    WARN(name << ": " << passed << "/" << total << " golden checks pass");
  }
}

TEST_CASE("special token ids", "[tokenizer]") {
  const Tokenizer llama2 = load("llama2");
  CHECK(llama2.bos_id() == 1);
  CHECK(llama2.eos_id() == 2);
  CHECK(llama2.vocab_size() == 32000);
  CHECK(llama2.is_special(1));
  CHECK_FALSE(llama2.is_special(100));
  CHECK(llama2.token_to_id("<0x0A>") == 13);
  CHECK(llama2.id_to_token(13) == "<0x0A>");
  CHECK(llama2.token_to_id("no such token") == -1);

  const Tokenizer llama3 = load("llama3");
  CHECK(llama3.bos_id() == 128000);
  CHECK(llama3.eos_id() == 128001);
  CHECK(llama3.vocab_size() == 128256);

  const Tokenizer falcon = load("falcon");
  CHECK(falcon.bos_id() == -1);
  CHECK(falcon.eos_id() == 11);
  CHECK(falcon.vocab_size() == 65024);
}

TEST_CASE("StreamDecoder emits only whole characters and adds up to decode()", "[tokenizer]") {
  const nlohmann::json corpus = read_json(tokenizers_dir() / "corpus.json");
  // The whole corpus as one text too: long enough that the decoder's window moves many times.
  std::vector<std::string> texts;
  std::string all;
  for (const auto& entry : corpus) {
    texts.push_back(entry.get<std::string>());
    all += texts.back();
  }
  texts.push_back(all);
  for (const std::string& name : vocabularies()) {
    const Tokenizer tok = load(name);
    for (const std::string& text : texts) {
      const auto ids = tok.encode(text, true);
      for (const bool skip_special : {true, false}) {
        INFO(name << ": text '" << text << "', skip_special " << skip_special);
        lowbit::StreamDecoder stream(tok, skip_special);
        std::string joined;
        for (const int32_t id : ids) {
          const std::string piece = stream.push(id);
          CHECK(is_valid_utf8(piece));
          joined += piece;
        }
        const std::string rest = stream.flush();
        CHECK(is_valid_utf8(rest));
        joined += rest;
        CHECK(joined == tok.decode(ids, skip_special));
      }
    }
  }
}

TEST_CASE("StreamDecoder holds back a character split across byte-fallback tokens", "[tokenizer]") {
  const Tokenizer tok = load("llama2");
  // U+1F600 is F0 9F 98 80; Llama-2 has no piece for it: "▁" then four byte tokens. HF decodes a
  // run of byte tokens as a whole (one U+FFFD per byte if the run is not valid UTF-8), so a run is
  // only final once a non-byte token ends it: the emoji comes out with the next word.
  const auto ids = tok.encode("a \xF0\x9F\x98\x80 b", false);
  REQUIRE(ids.size() == 7);
  lowbit::StreamDecoder stream(tok);
  std::vector<std::string> pieces;
  for (const int32_t id : ids) pieces.push_back(stream.push(id));
  CHECK(pieces[0] == "a");
  CHECK(pieces[1] == " ");
  for (size_t i = 2; i < 6; ++i) CHECK(pieces[i].empty());
  CHECK(pieces[6] == "\xF0\x9F\x98\x80 b");
  CHECK(stream.flush().empty());
  // A run still open at the end comes out of flush().
  lowbit::StreamDecoder tail(tok);
  std::string out;
  for (const int32_t id : tok.encode("a \xF0\x9F\x98\x80", false)) out += tail.push(id);
  CHECK(out == "a ");
  CHECK(tail.flush() == "\xF0\x9F\x98\x80");
}

TEST_CASE("StreamDecoder never emits text that a later byte token would change", "[tokenizer]") {
  const Tokenizer tok = load("llama2");
  // <0x66> 'f' then <0xBD>: the run is invalid UTF-8 as a whole, so HF decodes both bytes as
  // U+FFFD, and a stream that had already printed 'f' would disagree (a fuzz finding).
  const int32_t f = tok.token_to_id("<0x66>"), bd = tok.token_to_id("<0xBD>");
  REQUIRE(f >= 0);
  REQUIRE(bd >= 0);
  lowbit::StreamDecoder stream(tok);
  std::string out = stream.push(f);
  out += stream.push(bd);
  out += stream.flush();
  CHECK(out == tok.decode({f, bd}));
  CHECK(out == "\xEF\xBF\xBD\xEF\xBF\xBD");
}

TEST_CASE("invalid UTF-8 input throws InputError with the byte offset", "[tokenizer]") {
  const Tokenizer tok = load("llama3");
  for (const std::string& bad : {std::string("ab\xff"), std::string("ab\xc0\x80"), std::string("ab\xed\xa0\x80"),
                                 std::string("ab\xe4\xbd"), std::string("ab\x80")}) {
    try {
      tok.encode(bad);
      FAIL("no exception for invalid UTF-8");
    } catch (const InputError& e) {
      CHECK(std::string(e.what()).find("byte 2") != std::string::npos);
    }
  }
}

TEST_CASE("bad tokenizer files throw InputError naming the file", "[tokenizer]") {
  auto message_of = [](const std::string& path) {
    try {
      Tokenizer::from_file(path);
    } catch (const InputError& e) {
      return std::string(e.what());
    }
    return std::string("no exception");
  };
  const std::string missing = (fs::temp_directory_path() / "lowbit-no-such-tokenizer.json").string();
  CHECK(message_of(missing).find(missing) != std::string::npos);

  const std::string bad_json = write_temp("lowbit-bad-json-tokenizer.json", "{\"model\": [1, 2");
  CHECK(message_of(bad_json).find(bad_json) != std::string::npos);

  const std::string no_model = write_temp("lowbit-no-model-tokenizer.json", "{\"version\": \"1.0\"}");
  const std::string no_model_message = message_of(no_model);
  CHECK(no_model_message.find(no_model) != std::string::npos);
  CHECK(no_model_message.find("model") != std::string::npos);

  const std::string unigram = write_temp("lowbit-unigram-tokenizer.json",
                                         R"({"model": {"type": "Unigram", "vocab": []}})");
  const std::string unigram_message = message_of(unigram);
  CHECK(unigram_message.find(unigram) != std::string::npos);
  CHECK(unigram_message.find("Unigram") != std::string::npos);

  const std::string nfkc = write_temp("lowbit-nfkc-tokenizer.json",
                                      R"({"normalizer": {"type": "NFKC"}, "model": {"type": "BPE", "vocab": {}, "merges": []}})");
  CHECK(message_of(nfkc).find("NFKC") != std::string::npos);
}

// The text is every corpus entry that Hugging Face itself decodes back to the same text
// (golden.json: decode(encode(text)) == text; llama2's Metaspace, for one, adds a space after a
// special token), joined by newlines and repeated past 16 KB: decoding its ids gives it back.
TEST_CASE("encoding tens of KB round-trips (timings printed, not asserted)", "[tokenizer]") {
  for (const char* name : {"llama2", "llama3", "falcon"}) {
    const nlohmann::json golden = read_json(tokenizers_dir() / name / "golden.json");
    std::string text;
    size_t entries = 0;
    for (const auto& c : golden.at("cases"))
      if (c.at("decoded_plain") == c.at("text")) {
        text += c.at("text").get<std::string>() + "\n";
        ++entries;
      }
    INFO(name << ": " << entries << " of " << golden.at("cases").size() << " corpus entries round-trip in HF");
    REQUIRE(entries * 2 > golden.at("cases").size());
    while (text.size() < 16 * 1024) text += text;
    const auto load_start = std::chrono::steady_clock::now();
    const Tokenizer tok = load(name);
    const auto start = std::chrono::steady_clock::now();
    const auto ids = tok.encode(text, false);
    const auto end = std::chrono::steady_clock::now();
    const double load_ms = std::chrono::duration<double, std::milli>(start - load_start).count();
    const double encode_ms = std::chrono::duration<double, std::milli>(end - start).count();
    WARN(name << ": load " << load_ms << " ms; encode " << text.size() << " bytes -> " << ids.size()
              << " ids in " << encode_ms << " ms");
    CHECK(tok.decode(ids, false) == text);
  }
}
