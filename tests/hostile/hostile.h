/*
 * hostile.h: what the attack tests share: raw sockets to the broker's three sockets, its descriptor
 * count, and the honest client whose experience each test asserts on.
 *
 * Every attack program runs the real broker (harness.h), attacks it from forked children that use
 * only raw system calls, and meanwhile measures an honest client in a fresh process (the program
 * re-executes itself with a role, since nng cannot be used in a forked child).
 */
#ifndef MB_TEST_HOSTILE_H
#define MB_TEST_HOSTILE_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "harness.h"

/* The file system path behind b's ipc:// address, and the same with a suffix (".fd", ".admin"). */
const char *mb_hostile_path(const mb_test_broker *b);
void mb_hostile_path_with(const mb_test_broker *b, const char *suffix, char *out, size_t len);

/* A connected AF_UNIX socket of `type` (SOCK_STREAM, SOCK_SEQPACKET) to path, or -1. */
int mb_hostile_connect(const char *path, int type);

/* The SP header a REQ (0x30) peer sends first on an nng IPC connection. */
extern const unsigned char mb_hostile_sp_req_header[8];

/*
 * An nng REQ connection spoken by hand (no nng in the attacking process): connects to path and
 * exchanges SP headers. Returns the socket or -1.
 */
int mb_hostile_sp_open(const char *path);

/* Sends one request (protobuf-c packed, with a REQ request id) on an mb_hostile_sp_open socket.
 * 0, or -1 when the write failed (errno: EAGAIN when a send timeout of s passed before any of
 * it was written; a frame once started is always finished). */
struct Membroker__V1__Request;
int mb_hostile_sp_send(int s, const struct Membroker__V1__Request *req, uint32_t id);

/* Reads one reply's body into buf (at most cap bytes): its length, or -1. */
long mb_hostile_sp_recv(int s, void *buf, size_t cap);

/* Open descriptors of process pid, and how many of them are sockets. -1 if unreadable. */
int mb_hostile_fds(pid_t pid);
int mb_hostile_sockets(pid_t pid);

/*
 * The broker's descriptors (and sockets) before an attack: the most seen over 1.2 s, because its
 * self-probe holds a connection for a moment every second.
 */
void mb_hostile_baseline(pid_t pid, int *fds, int *sockets);

/* Prints what each of pid's descriptors is (for a failing descriptor check). */
void mb_hostile_dump_fds(pid_t pid);

/* Waits (up to timeout_ms) until pid holds at most `fds` descriptors; returns the last count. */
int mb_hostile_wait_fds(pid_t pid, int fds, int timeout_ms);

/* Forks a child that runs fn(arg) until it returns or is killed (fn must not use nng). */
pid_t mb_hostile_fork(void (*fn)(void *arg), void *arg);

/* SIGKILLs and reaps a child from mb_hostile_fork. */
void mb_hostile_kill(pid_t pid);

/*
 * One honest client in a fresh process: mb_connect, reserve and commit `bytes` at eTaskCritical,
 * write them, release, disconnect. Returns 0 and the milliseconds connect + commit took inside
 * that process (*ms), or -1 with the reason printed.
 */
int mb_hostile_honest(const char *address, uint64_t bytes, long *ms);

/*
 * How long an honest connect + commit of `bytes` may take while an attack runs: 20 times the
 * slowest of three without it (measured now, in fresh processes like mb_hostile_honest), and never
 * less than 2 s. On a quiet machine that is 2 s; on one loaded by other work (a CPU hog on both
 * cores, a sanitizer build) the allowance grows with what the machine itself costs, not with what
 * the attack costs: an attack that stalls the broker still takes it far past the bound (before
 * the broker was immune, 10 to 21 s).
 */
long mb_hostile_honest_bound(const char *address, uint64_t bytes);

/* membrokerctl -a address status, output discarded: its exit code (-1: did not run), and the
 * milliseconds it took (*ms). */
int mb_hostile_ctl_status(const char *address, long *ms);

/* Call first in main(): runs a role this program was re-executed for and exits; else returns. */
void mb_hostile_roles(int argc, char **argv);

/*
 * An attacker's body, for a forked child: opens an nng connection to path by hand and sends
 * requests without reading a reply until SIGUSR1 (MemoryLoad requests without a session; with
 * watch, a Hello and then Watch requests the broker parks), then drains what the broker still
 * sends and exits.
 */
void mb_hostile_unread_flood(const char *path, bool watch);

/* The descriptor number of the newest memfd process pid holds (for a client: the section it
 * received last), or -1. Reads /proc/<pid>/fd (root, or the process itself). */
int mb_hostile_newest_memfd(pid_t pid);

/* Milliseconds of CLOCK_MONOTONIC. */
long long mb_hostile_now_ms(void);

#endif
