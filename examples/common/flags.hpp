#pragma once
// examples/common/flags.hpp: GNU-style command-line flags for the example programs.
//
// A program declares its flags against variables it owns, then parses:
//
//     examples::flags::parser flags("llm_batch", "Sends a JSONL batch of LLM requests.");
//     flags.text("input", input, "FILE", "requests, one JSON object a line").required();
//     flags.integer("concurrency", concurrency, "N", "requests in flight", 1, 1024);
//     flags.toggle("resume", resume, "continue an interrupted run");
//     examples::flags::parse_or_exit(flags, argc, argv);
//
// Accepted: `--name value`, `--name=value`, `--flag` (a toggle), `--help`/`-h`.
// Rejected with a one-line message (usage_error): an unknown flag, a missing
// value (a value may not begin with "--" unless written `--name=--value`), a
// number that does not parse whole or lies outside its range, a value given
// to a toggle, a positional argument, a required flag left out. A flag given
// twice keeps the last value, as GNU tools do.
//
// Not thread-safe (parse once, at start-up); no allocation after parsing.

#include <algorithm>
#include <charconv>
#include <cmath>
#include <concepts>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <limits>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

namespace examples::flags {

/// A command line that cannot be run; what() is one line naming the flag.
struct usage_error : std::runtime_error {
    using std::runtime_error::runtime_error;
};

/// What parse() found: run the program, or print the usage.
enum class outcome { run, help };

/// The flags of one program and the variables they set.
class parser {
public:
    parser(std::string program, std::string description)
        : program_(std::move(program)), description_(std::move(description)) {}

    /// `--name VALUE` stores VALUE as is.
    parser& text(std::string name, std::string& target, std::string value_name, std::string help) {
        return add(std::move(name), std::move(value_name), std::move(help),
                   [&target](std::string_view, std::string_view value) { target = std::string(value); });
    }

    /// `--name N`: a whole decimal integer in [min, max].
    template <std::integral T>
    parser& integer(std::string name, T& target, std::string value_name, std::string help,
                    T min = std::numeric_limits<T>::min(), T max = std::numeric_limits<T>::max()) {
        return add(std::move(name), std::move(value_name), std::move(help),
                   [&target, min, max](std::string_view flag, std::string_view value) {
                       T parsed{};
                       const char* end = value.data() + value.size();
                       const auto [ptr, ec] = std::from_chars(value.data(), end, parsed);
                       if (value.empty() || ec == std::errc::invalid_argument || ptr != end) {
                           throw usage_error("--" + std::string(flag) + ": expected an integer, got '" +
                                             std::string(value) + "'");
                       }
                       if (ec == std::errc::result_out_of_range || parsed < min || parsed > max) {
                           throw usage_error("--" + std::string(flag) + ": must be in [" + std::to_string(min) + ", " +
                                             std::to_string(max) + "], got " + std::string(value));
                       }
                       target = parsed;
                   });
    }

    /// `--name X`: a finite decimal number in [min, max].
    parser& number(std::string name, double& target, std::string value_name, std::string help,
                   double min = -std::numeric_limits<double>::max(), double max = std::numeric_limits<double>::max()) {
        return add(std::move(name), std::move(value_name), std::move(help),
                   [&target, min, max](std::string_view flag, std::string_view value) {
                       double parsed = 0;
                       const char* end = value.data() + value.size();
                       const auto [ptr, ec] = std::from_chars(value.data(), end, parsed);
                       if (value.empty() || ec != std::errc{} || ptr != end || !std::isfinite(parsed)) {
                           throw usage_error("--" + std::string(flag) + ": expected a number, got '" +
                                             std::string(value) + "'");
                       }
                       if (parsed < min || parsed > max) {
                           throw usage_error("--" + std::string(flag) + ": must be in [" + short_number(min) + ", " +
                                             short_number(max) + "], got " + std::string(value));
                       }
                       target = parsed;
                   });
    }

    /// `--name` alone sets target to true.
    parser& toggle(std::string name, bool& target, std::string help) {
        add(std::move(name), "", std::move(help), [&target](std::string_view, std::string_view) { target = true; });
        flags_.back().takes_value = false;
        return *this;
    }

    /// The flag declared last must be given.
    parser& required() {
        if (!flags_.empty()) flags_.back().required = true;
        return *this;
    }

    /// Reads argv[1..argc); sets the targets of the flags given. Returns
    /// outcome::help when --help or -h appears anywhere (nothing else is
    /// checked then). Throws usage_error for anything it cannot accept.
    outcome parse(int argc, const char* const* argv) {
        for (int i = 1; i < argc; ++i) {
            const std::string_view arg(argv[i]);
            if (arg == "--help" || arg == "-h") return outcome::help;
        }
        std::vector<bool> seen(flags_.size(), false);
        for (int i = 1; i < argc; ++i) {
            const std::string_view arg(argv[i]);
            if (arg.size() < 3 || arg.substr(0, 2) != "--") {
                throw usage_error("unexpected argument '" + std::string(arg) + "' (flags are --name value)");
            }
            std::string_view name = arg.substr(2);
            std::optional<std::string_view> value;
            if (const auto eq = name.find('='); eq != std::string_view::npos) {
                value = name.substr(eq + 1);
                name = name.substr(0, eq);
            }
            const std::size_t index = find(name);
            if (index == flags_.size()) throw usage_error("unknown flag '--" + std::string(name) + "'");
            flag& f = flags_[index];
            if (!f.takes_value) {
                if (value) throw usage_error("--" + f.name + " takes no value");
                value = std::string_view{};
            } else if (!value) {
                if (i + 1 >= argc || std::string_view(argv[i + 1]).substr(0, 2) == "--") {
                    throw usage_error("--" + f.name + " needs a value (" + f.value_name + ")");
                }
                value = std::string_view(argv[++i]);
            }
            f.set(f.name, *value);
            seen[index] = true;
        }
        for (std::size_t i = 0; i < flags_.size(); ++i) {
            if (flags_[i].required && !seen[i]) throw usage_error("--" + flags_[i].name + " is required");
        }
        return outcome::run;
    }

    /// The usage text: synopsis, description, one line per flag.
    [[nodiscard]] std::string usage() const {
        std::string out = "usage: " + program_;
        const std::size_t indent = out.size();
        std::size_t column = out.size();
        for (const flag& f : flags_) {
            std::string item = "--" + f.name + (f.takes_value ? " " + f.value_name : "");
            if (!f.required) item = "[" + item + "]";
            if (column + 1 + item.size() > 80) {  // wrap under the first flag
                out += "\n" + std::string(indent, ' ');
                column = indent;
            }
            out += " " + item;
            column += 1 + item.size();
        }
        out += "\n\n" + description_ + "\n\n";
        for (const flag& f : flags_) {
            std::string left = "  --" + f.name + (f.takes_value ? " " + f.value_name : "");
            left.resize(std::max<std::size_t>(left.size() + 2, 26), ' ');
            out += left + f.help + "\n";
        }
        out += "  --help                  print this and exit\n";
        return out;
    }

    [[nodiscard]] const std::string& program() const noexcept { return program_; }

private:
    struct flag {
        std::string name, value_name, help;
        std::function<void(std::string_view, std::string_view)> set;
        bool takes_value = true;
        bool required = false;
    };

    template <class Setter>
    parser& add(std::string name, std::string value_name, std::string help, Setter set) {
        flags_.push_back(flag{std::move(name), std::move(value_name), std::move(help), std::move(set)});
        return *this;
    }

    [[nodiscard]] std::size_t find(std::string_view name) const {
        for (std::size_t i = 0; i < flags_.size(); ++i) {
            if (flags_[i].name == name) return i;
        }
        return flags_.size();
    }

    static std::string short_number(double x) {
        char buffer[32];
        std::snprintf(buffer, sizeof buffer, "%g", x);
        return buffer;
    }

    std::string program_;
    std::string description_;
    std::vector<flag> flags_;
};

/// Parses; on --help prints the usage to stdout and exits 0; on a usage error
/// prints `PROGRAM: MESSAGE (see --help)` to stderr and exits 2.
inline void parse_or_exit(parser& p, int argc, const char* const* argv) {
    try {
        if (p.parse(argc, argv) == outcome::help) {
            std::fputs(p.usage().c_str(), stdout);
            std::exit(0);
        }
    } catch (const usage_error& e) {
        std::fprintf(stderr, "%s: %s (see --help)\n", p.program().c_str(), e.what());
        std::exit(2);
    }
}

/// Prints `PROGRAM: MESSAGE` to stderr and exits 2: for a command line that
/// parsed but cannot run (a missing file, a missing environment variable).
[[noreturn]] inline void usage_failure(const parser& p, const std::string& message) {
    std::fprintf(stderr, "%s: %s\n", p.program().c_str(), message.c_str());
    std::exit(2);
}

}  // namespace examples::flags
