/*
 * harness.h: starts the real membrokerd for a test, on a socket in a fresh temporary directory.
 */
#ifndef MB_TEST_HARNESS_H
#define MB_TEST_HARNESS_H

#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

typedef struct mb_test_broker {
	pid_t pid;
	char dir[128];	   /* temporary directory, removed by stop */
	char address[256]; /* ipc:// URL of the broker's socket */
	char log[192];	   /* file receiving the broker's stdout and stderr */
} mb_test_broker;

/*
 * Starts membrokerd --listen <fresh address> plus extra_args (NULL-terminated, may be NULL) and
 * waits (up to 20 s) until a client can connect. Returns 0, or -1 with a message on stderr.
 */
int mb_test_broker_start(mb_test_broker *b, const char *const *extra_args);

/* Same, on a given address (b->address is set from it); the directory is still created. */
int mb_test_broker_start_at(mb_test_broker *b, const char *address, const char *const *extra_args);

/* Same, with setup(arg) run in the broker's process just before it execs (after the harness's own
 * environment changes): to hand it descriptors or environment, as systemd does. */
int mb_test_broker_start_with(mb_test_broker *b, const char *address, const char *const *extra_args,
			      void (*setup)(void *arg), void *arg);

/* SIGTERM, then waits for exit (SIGKILL after 20 s). Returns the exit status as waitpid reports it,
 * and removes the temporary directory. */
int mb_test_broker_stop(mb_test_broker *b);

/* SIGKILL and reap, keeping the directory (for restart tests); stop() still cleans up. */
void mb_test_broker_kill(mb_test_broker *b);

/* Polls cond(arg) every 2 ms until it returns true or timeout_ms passes. Returns the last result.
 */
bool mb_test_wait_for(bool (*cond)(void *arg), void *arg, int timeout_ms);

/* Runs fn(arg) in a forked child and returns its wait status (for fault and fork tests). */
int mb_test_in_child(void (*fn)(void *arg), void *arg);

/*
 * assert_hr(expr, want): fails the current cmocka test when expr's HRESULT is not want, naming
 * both and the library's last error text. Include <cmocka.h> before this header.
 */
void mb_test_fail_hr(const char *expr, int32_t got, int32_t want, const char *file, int line);

#define assert_hr(expr, want)                                                                      \
	do {                                                                                       \
		int32_t got_ = (int32_t)(expr);                                                    \
		int32_t want_ = (int32_t)(want);                                                   \
		if (got_ != want_)                                                                 \
			mb_test_fail_hr(#expr, got_, want_, __FILE__, __LINE__);                   \
	} while (0)

/* assert_u64(got, want), assert_u64_le(got, limit), assert_u64_ge(got, floor): 64-bit
 * comparisons that print both values in full (cmocka's own print them as long). */
#define assert_u64(got, want)                                                                      \
	do {                                                                                       \
		uint64_t g_ = (uint64_t)(got);                                                     \
		uint64_t w_ = (uint64_t)(want);                                                    \
		if (g_ != w_) {                                                                    \
			print_error("%s:%d: %s is %" PRIu64 " (0x%" PRIx64 "), expected %" PRIu64  \
				    " (0x%" PRIx64 ")\n",                                          \
				    __FILE__, __LINE__, #got, g_, g_, w_, w_);                     \
			_fail(__FILE__, __LINE__);                                                 \
		}                                                                                  \
	} while (0)

#define assert_u64_le(got, limit)                                                                  \
	do {                                                                                       \
		uint64_t g_ = (uint64_t)(got);                                                     \
		uint64_t l_ = (uint64_t)(limit);                                                   \
		if (g_ > l_) {                                                                     \
			print_error("%s:%d: %s is %" PRIu64 ", more than %" PRIu64 " (%s)\n",      \
				    __FILE__, __LINE__, #got, g_, l_, #limit);                     \
			_fail(__FILE__, __LINE__);                                                 \
		}                                                                                  \
	} while (0)

#define assert_u64_ge(got, floor)                                                                  \
	do {                                                                                       \
		uint64_t g_ = (uint64_t)(got);                                                     \
		uint64_t f_ = (uint64_t)(floor);                                                   \
		if (g_ < f_) {                                                                     \
			print_error("%s:%d: %s is %" PRIu64 ", less than %" PRIu64 " (%s)\n",      \
				    __FILE__, __LINE__, #got, g_, f_, #floor);                     \
			_fail(__FILE__, __LINE__);                                                 \
		}                                                                                  \
	} while (0)

#endif
