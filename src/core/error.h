// Errors: exceptions carrying the file, tensor or flag at fault; main() catches them once and
// prints one line. The exit code is part of the contract (README "Exit codes").
#pragma once
#include <stdexcept>
#include <string>

namespace lowbit {

enum class ExitCode : int {
  ok = 0,
  input = 1,        // bad model file, bad data, runtime failure (incl. GPU out of memory)
  usage = 2,        // bad flag values or command line
  interrupted = 130 // SIGINT
};

class Error : public std::runtime_error {
 public:
  Error(ExitCode code, const std::string& what) : std::runtime_error(what), code_(code) {}
  ExitCode code() const { return code_; }

 private:
  ExitCode code_;
};

// Something in a model folder, prompt, or data file is wrong. Message names the file/tensor.
class InputError : public Error {
 public:
  explicit InputError(const std::string& what) : Error(ExitCode::input, what) {}
};

// A flag or argument is out of range or malformed. Message names the flag.
class UsageError : public Error {
 public:
  explicit UsageError(const std::string& what) : Error(ExitCode::usage, what) {}
};

// The device failed: a CUDA call's error, or an allocation that did not fit.
class DeviceError : public Error {
 public:
  explicit DeviceError(const std::string& what) : Error(ExitCode::input, what) {}
};

}  // namespace lowbit
