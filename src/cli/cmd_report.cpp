// `lowbit report`: sweeps' runs files (several: shards, or sweeps of several models) as one
// self-contained HTML page (src/study/report.h).
#include <fstream>

#include <spdlog/spdlog.h>

#include "cli/commands.h"
#include "core/error.h"
#include "study/report.h"

namespace lowbit::cli {

namespace {

struct ReportFlags {
  std::vector<std::string> runs;
  std::string output = "report.html";
};

int report(const ReportFlags& f) {
  const study::ReportInput input = study::read_report_runs(f.runs);
  for (const std::string& w : input.warnings) spdlog::warn("{}", w);
  const std::string html = study::render_report(input);
  std::ofstream out(f.output, std::ios::binary | std::ios::trunc);
  if (!out) throw InputError(fmt::format("{}: cannot open for writing", f.output));
  out << html;
  out.close();
  if (!out) throw InputError(fmt::format("{}: write failed", f.output));
  spdlog::info("wrote {} ({} grid points from {} file(s), {:.1f} KB)", f.output, input.runs.size(), f.runs.size(),
               html.size() / 1e3);
  return 0;
}

}  // namespace

void add_report_command(CLI::App& app, int& exit_code) {
  auto flags = std::make_shared<ReportFlags>();
  CLI::App* cmd = app.add_subcommand("report", "turn sweeps' runs files into one self-contained HTML report");
  cmd->add_option("runs", flags->runs,
                  "runs files written by lowbit sweep (several: merged, e.g. the shards of one sweep; several "
                  "models are shown side by side, never averaged)")
      ->required();
  cmd->add_option("-o,--output", flags->output, "HTML file to write")->capture_default_str();
  cmd->callback([flags, &exit_code] { exit_code = report(*flags); });
}

}  // namespace lowbit::cli
