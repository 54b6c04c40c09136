#pragma once
// Runs a program under test as a user would: a child process whose stdout and
// stderr come back on pipes.

#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <stdexcept>
#include <string>
#include <vector>

extern char** environ;

namespace ratelimit_test {

/// A started program: its process id and the read ends of its stdout and stderr.
struct child {
    pid_t pid = -1;
    int out = -1;
    int err = -1;
};

/// Starts `program` with `args`; throws std::runtime_error when it cannot.
inline child spawn(const std::string& program, std::vector<std::string> args) {
    args.insert(args.begin(), program);
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    int out[2], err[2];
    if (::pipe(out) != 0) throw std::runtime_error("spawn: pipe failed");
    if (::pipe(err) != 0) {
        ::close(out[0]);
        ::close(out[1]);
        throw std::runtime_error("spawn: pipe failed");
    }
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, out[1], 1);
    posix_spawn_file_actions_adddup2(&actions, err[1], 2);
    posix_spawn_file_actions_addclose(&actions, out[0]);
    posix_spawn_file_actions_addclose(&actions, err[0]);
    child c;
    const int failed = posix_spawn(&c.pid, argv[0], &actions, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    ::close(out[1]);
    ::close(err[1]);
    if (failed != 0) {
        ::close(out[0]);
        ::close(err[0]);
        throw std::runtime_error("spawn: cannot start " + program);
    }
    c.out = out[0];
    c.err = err[0];
    return c;
}

/// Everything left on `fd`, up to end of file.
inline std::string read_all(int fd) {
    std::string all;
    char buffer[4096];
    for (ssize_t n; (n = ::read(fd, buffer, sizeof buffer)) > 0;) all.append(buffer, static_cast<std::size_t>(n));
    return all;
}

/// One line from `fd`, without its newline (what is left at end of file).
inline std::string read_line(int fd) {
    std::string line;
    char ch = 0;
    while (::read(fd, &ch, 1) == 1 && ch != '\n') line += ch;
    return line;
}

/// Waits for `pid`; its exit status, or -1 when a signal ended it.
inline int exit_status(pid_t pid) {
    int status = 0;
    if (::waitpid(pid, &status, 0) != pid) return -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

}  // namespace ratelimit_test
