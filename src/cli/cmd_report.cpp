// `lowbit report`: the sweep's runs.jsonl as one self-contained HTML page (src/study/report.h).
#include <fstream>

#include <spdlog/spdlog.h>

#include "cli/commands.h"
#include "core/error.h"
#include "study/jsonl.h"
#include "study/report.h"

namespace lowbit::cli {

namespace {

struct ReportFlags {
  std::string runs, output = "report.html";
};

int report(const ReportFlags& f) {
  // A sweep killed mid-write leaves a torn last line; the report shows the finished runs.
  std::vector<nlohmann::json> runs;
  for (study::JsonlRecord& r : study::read_jsonl(f.runs, true)) {
    if (!r.value.contains("quant"))
      throw InputError(fmt::format("{}:{}: not a sweep record (no \"quant\")", f.runs, r.line));
    runs.push_back(std::move(r.value));
  }
  if (runs.empty()) throw InputError(fmt::format("{}: no runs in the file", f.runs));
  const std::string html = study::render_report(runs, f.runs);
  std::ofstream out(f.output, std::ios::binary | std::ios::trunc);
  if (!out) throw InputError(fmt::format("{}: cannot open for writing", f.output));
  out << html;
  out.close();
  if (!out) throw InputError(fmt::format("{}: write failed", f.output));
  spdlog::info("wrote {} ({} runs, {:.1f} KB)", f.output, runs.size(), html.size() / 1e3);
  return 0;
}

}  // namespace

void add_report_command(CLI::App& app, int& exit_code) {
  auto flags = std::make_shared<ReportFlags>();
  CLI::App* cmd = app.add_subcommand("report", "turn a sweep's runs.jsonl into a self-contained HTML report");
  cmd->add_option("runs", flags->runs, "runs file written by lowbit sweep")->required();
  cmd->add_option("-o,--output", flags->output, "HTML file to write")->capture_default_str();
  cmd->callback([flags, &exit_code] { exit_code = report(*flags); });
}

}  // namespace lowbit::cli
