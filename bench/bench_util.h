/*
 * bench_util.h: what the allocator and runtime benchmarks share: a membrokerd of their own on a
 * temporary socket, child processes started with posix_spawn (never fork: nng aborts in a forked
 * child) whose one-line answers are read from a pipe, and medians.
 */
#ifndef MB_BENCH_UTIL_H
#define MB_BENCH_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

typedef struct bench_broker {
	char dir[64];
	char url[160];
	pid_t pid;
} bench_broker;

/* Starts daemon_path with a budget of 8 GiB on a temporary socket, with --commit-credit
 * commit_credit (NULL: the default), and waits until the socket exists. Exits the program on
 * failure. */
void bench_broker_start(bench_broker *b, const char *daemon_path, const char *commit_credit);
void bench_broker_stop(bench_broker *b);

/* Runs argv (argv[0] a path) with its stdout in out (at most len-1 bytes, NUL-terminated);
 * returns 0 when it exited with status 0. */
int bench_run(char *const argv[], char *out, size_t len);

uint64_t bench_now_ns(void);
/* CPU time of the whole process (all threads, user and system): on a machine shared with other
 * work, operations per CPU-second compare allocators where wall time mostly measures the
 * scheduler. */
uint64_t bench_cpu_ns(void);
double bench_median(double *v, size_t n);
/* "1.23 4.56 7.89" of /proc/loadavg's first three fields. */
void bench_loadavg(char *out, size_t len);

#endif
