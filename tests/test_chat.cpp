// Chat templates: lowbit's native renderers equal transformers' apply_chat_template on the
// templates real checkpoints ship (tests/data/chat, made by tools/make_chat_goldens.py), the
// recognition is exact (formatting that Jinja ignores is ignored, anything else is refused), and
// chat records and folders are read with clear errors.
#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "chat/chat_template.h"
#include "core/error.h"
#include "test_fixtures.h"
#include "test_util.h"

using namespace lowbit;
using json = nlohmann::json;
using lowbit::test::TempDir;

namespace {

json read_json(const std::string& path) {
  std::ifstream in(path);
  REQUIRE(in);
  return json::parse(in);
}

std::string chat_dir() { return lowbit::test::data_dir() + "/chat"; }

ChatTemplate load(const json& spec) {
  ChatTemplate t = ChatTemplate::recognise(spec["template"].get<std::string>(), "test");
  t.set_special_tokens(spec["bos_token"].is_string() ? spec["bos_token"].get<std::string>() : "",
                       spec["eos_token"].is_string() ? spec["eos_token"].get<std::string>() : "");
  return t;
}

}  // namespace

TEST_CASE("chat: every known template renders as transformers' apply_chat_template", "[chat]") {
  const json templates = read_json(chat_dir() + "/templates.json");
  const json golden = read_json(chat_dir() + "/golden.json");
  size_t rendered = 0, raised = 0;
  for (const json& c : golden) {
    const std::string name = c["template"];
    const json& spec = templates[name];
    INFO(name << " " << c["messages"].dump() << " generation prompt " << c["add_generation_prompt"]);
    const ChatTemplate t = load(spec);
    CHECK(chat_family_name(t.family()) == spec["family"].get<std::string>());
    std::vector<ChatMessage> messages = parse_chat_messages(c["messages"], "golden");
    if (c.value("error", false)) {
      CHECK_THROWS_AS(t.render(messages, c["add_generation_prompt"]), InputError);
      ++raised;
    } else {
      CHECK(t.render(messages, c["add_generation_prompt"]) == c["text"].get<std::string>());
      ++rendered;
    }
  }
  CHECK(rendered >= 120);
  CHECK(raised >= 8);  // Llama-2 and Mistral refuse non-alternating roles
}

TEST_CASE("chat: the default system message is read from the template", "[chat]") {
  const json templates = read_json(chat_dir() + "/templates.json");
  CHECK(load(templates["smollm2"]).default_system() == "You are a helpful AI assistant named SmolLM, trained by Hugging Face");
  CHECK(load(templates["qwen2"]).default_system() == "You are a helpful assistant.");
  CHECK(load(templates["chatml-openorca"]).default_system().empty());
}

TEST_CASE("chat: formatting Jinja ignores is ignored; anything else is refused", "[chat]") {
  const json templates = read_json(chat_dir() + "/templates.json");
  const std::string smol = templates["smollm2"]["template"];
  // Spaces inside tags, quote style and escaped newlines do not change what Jinja renders.
  std::string respaced = smol;
  size_t nl = respaced.find("system\n");
  REQUIRE(nl != std::string::npos);
  respaced.replace(nl, 7, "system\\n");
  respaced.replace(0, 2, "{%  ");
  CHECK(ChatTemplate::recognise(respaced, "t").default_system() ==
        "You are a helpful AI assistant named SmolLM, trained by Hugging Face");
  CHECK(normalize_jinja_template("{% if x %}\n  a{% endif %}") == normalize_jinja_template("{%if x%}  a{%endif%}"));
  CHECK(normalize_jinja_template("{{ 'a\\nb' }}") == normalize_jinja_template("{{\"a\nb\"}}"));
  CHECK(normalize_jinja_template("x  {%- if y -%}  z") == "x{%ify%}z");
  CHECK(normalize_jinja_template("{{ 'a' }} b") != normalize_jinja_template("{{ 'a' }}b"));

  // A changed literal, a changed condition or an unknown family is refused with the way out.
  std::string changed = smol;
  changed.replace(changed.find("<|im_end|>' + '\n'"), 10, "<|im_stop|>");
  for (const std::string& bad : {changed, templates["tulu-unknown"]["template"].get<std::string>(),
                                 std::string("{{ messages[0]['content'] }}"), std::string("{% for")}) {
    try {
      (void)ChatTemplate::recognise(bad, "m/tokenizer_config.json");
      FAIL("recognised " << bad);
    } catch (const InputError& e) {
      CHECK_THAT(std::string(e.what()), Catch::Contains("m/tokenizer_config.json") && Catch::Contains("without --chat"));
    }
  }
}

TEST_CASE("chat: templates and messages are read from folders and records", "[chat]") {
  TempDir dir;
  const json templates = read_json(chat_dir() + "/templates.json");
  // The list form of chat_template ("default" is used) and AddedToken-style special tokens.
  dir.write("tokenizer_config.json",
            json{{"chat_template", json::array({{{"name", "tool_use"}, {"template", "{{ x }}"}},
                                                {{"name", "default"}, {"template", templates["llama2"]["template"]}}})},
                 {"bos_token", {{"content", "<s>"}, {"lstrip", false}}},
                 {"eos_token", "</s>"}}
                .dump());
  const ChatTemplate t = ChatTemplate::from_model_dir(dir.path.string());
  CHECK(t.family() == ChatFamily::Llama2);
  CHECK(t.render({{"user", "hi"}}, true) == "<s>[INST] hi [/INST]");
  // chat_template.jinja when tokenizer_config.json has none.
  TempDir jinja;
  jinja.write("tokenizer_config.json", "{}");
  jinja.write("chat_template.jinja", templates["zephyr"]["template"].get<std::string>());
  CHECK(ChatTemplate::from_model_dir(jinja.path.string()).family() == ChatFamily::Zephyr);
  TempDir none;
  none.write("tokenizer_config.json", "{}");
  CHECK_THROWS_WITH(ChatTemplate::from_model_dir(none.path.string()), Catch::Contains("no chat template"));

  CHECK_THROWS_WITH(parse_chat_messages(json::array(), "f:3"), Catch::Contains("f:3") && Catch::Contains("non-empty"));
  CHECK_THROWS_WITH(parse_chat_messages(json::parse(R"([{"role": "user"}])"), "f:4"), Catch::Contains("message 0"));
  CHECK_THROWS_WITH(parse_chat_messages(json::parse(R"([{"role": 1, "content": "x"}])"), "f:5"), Catch::Contains("f:5"));
  CHECK(parse_chat_messages(json::parse(R"([{"role": "user", "content": "x"}])"), "f").size() == 1);
}

TEST_CASE("chat: python_strip removes what Python's str.strip removes", "[chat]") {
  CHECK(python_strip("  a b \n\t") == "a b");
  CHECK(python_strip("\xe3\x80\x80x\xc2\xa0") == "x");  // U+3000, U+00A0
  CHECK(python_strip("\xe2\x80\x8bx") == "\xe2\x80\x8bx");  // U+200B is not whitespace in Python
  CHECK(python_strip("") == "");
  CHECK(python_strip(" \n ") == "");
}
