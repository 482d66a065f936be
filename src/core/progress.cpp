#include "core/progress.h"

#include <unistd.h>

#include <cmath>
#include <cstdio>

#include <fmt/format.h>

namespace lowbit {

namespace {
// Terminal redraws are throttled so a fast loop does not spend its time writing to stderr.
constexpr double kTerminalRedrawS = 0.1;
constexpr double kLogIntervalS = 5.0;
}  // namespace

std::string format_duration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "?";
  long s = std::lround(seconds);
  if (s < 60) return fmt::format("{}s", s);
  if (s < 3600) return fmt::format("{}m{:02}s", s / 60, s % 60);
  return fmt::format("{}h{:02}m", s / 3600, (s % 3600) / 60);
}

std::string format_progress(const std::string& label, size_t done, size_t total, const std::string& unit,
                            double elapsed_s, int bar_width) {
  std::string line = label;
  double fraction = total > 0 ? std::min(1.0, double(done) / double(total)) : 0.0;
  if (bar_width > 0) {
    int filled = int(fraction * bar_width);
    line += " [" + std::string(size_t(filled), '#') + std::string(size_t(bar_width - filled), '-') + "]";
  }
  line += fmt::format(" {}/{} {}", done, total, unit);
  if (elapsed_s > 0 && done > 0) {
    double rate = double(done) / elapsed_s;
    line += rate >= 10 ? fmt::format("  {:.0f} {}/s", rate, unit) : fmt::format("  {:.2f} {}/s", rate, unit);
    if (done < total) line += "  ETA " + format_duration(double(total - done) / rate);
  }
  line += "  elapsed " + format_duration(elapsed_s);
  return line;
}

Progress::Progress(std::string label, size_t total, std::string unit, bool is_terminal)
    : label_(std::move(label)), unit_(std::move(unit)), total_(total), terminal_(is_terminal),
      start_(std::chrono::steady_clock::now()), last_draw_(start_) {
  draw(true);
}

Progress::Progress(std::string label, size_t total, std::string unit)
    : Progress(std::move(label), total, std::move(unit), isatty(2) != 0) {}

Progress::~Progress() {
  // An exception unwinding through the work leaves the terminal line clean for its message.
  if (!finished_ && terminal_ && drawn_) std::fputs("\n", stderr);
}

double Progress::elapsed() const {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
}

void Progress::advance(size_t n) {
  done_ += n;
  draw(false);
}

void Progress::set_label(std::string label) {
  label_ = std::move(label);
  if (terminal_) draw(true);
}

void Progress::clear() {
  if (terminal_ && drawn_) {
    std::fputs("\r\033[K", stderr);
    std::fflush(stderr);
    drawn_ = false;
  }
}

void Progress::finish() {
  if (finished_) return;
  if (terminal_) {
    draw(true);
    std::fputs("\n", stderr);
  } else if (drawn_ || elapsed() >= kLogIntervalS) {  // quick work stays quiet in a log
    std::fprintf(stderr, "%s\n", format_progress(label_, done_, total_, unit_, elapsed(), 0).c_str());
  }
  std::fflush(stderr);
  finished_ = true;
}

void Progress::draw(bool force) {
  auto now = std::chrono::steady_clock::now();
  double since_draw = std::chrono::duration<double>(now - last_draw_).count();
  if (terminal_) {
    if (!force && drawn_ && since_draw < kTerminalRedrawS && done_ < total_) return;
    std::fprintf(stderr, "\r\033[K%s", format_progress(label_, done_, total_, unit_, elapsed(), 30).c_str());
    std::fflush(stderr);
    drawn_ = true;
    last_draw_ = now;
    return;
  }
  // Plain lines: none for work done within kLogIntervalS (a log is not flooded by quick steps);
  // after that every kLogIntervalS seconds or each new 10 %, whichever comes first.
  if (elapsed() < kLogIntervalS) return;
  size_t decile = total_ > 0 ? done_ * 10 / total_ : 0;
  if (!force && since_draw < kLogIntervalS && decile <= last_logged_decile_) return;
  if (force && drawn_) return;  // label changes are not logged by themselves
  last_logged_decile_ = decile;
  last_draw_ = now;
  if (done_ >= total_ && total_ > 0) return;  // finish() logs the last line
  std::fprintf(stderr, "%s\n", format_progress(label_, done_, total_, unit_, elapsed(), 0).c_str());
  std::fflush(stderr);
  drawn_ = true;
}

}  // namespace lowbit
