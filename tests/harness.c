/*
 * harness.c: runs the real membrokerd binary for system tests.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include "harness.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "membroker.h"

static long long now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

bool mb_test_wait_for(bool (*cond)(void *arg), void *arg, int timeout_ms)
{
	long long deadline = now_ms() + timeout_ms;
	for (;;) {
		if (cond(arg))
			return true;
		if (now_ms() > deadline)
			return cond(arg);
		usleep(2000);
	}
}

static bool broker_serves(void *arg)
{
	mb_test_broker *b = arg;
	int status;
	mb_client *c = NULL;

	if (waitpid(b->pid, &status, WNOHANG) == b->pid) {
		b->pid = -1;
		return true; /* died: stop waiting, the caller checks pid */
	}
	if (mb_connect(b->address, &c) != S_OK)
		return false;
	mb_disconnect(c);
	return true;
}

static int make_dir(mb_test_broker *b)
{
	snprintf(b->dir, sizeof(b->dir), "/tmp/mbtest.XXXXXX");
	if (mkdtemp(b->dir) == NULL) {
		perror("mkdtemp");
		return -1;
	}
	snprintf(b->log, sizeof(b->log), "%s/broker.log", b->dir);
	return 0;
}

static int spawn(mb_test_broker *b, const char *const *extra_args, void (*setup)(void *),
		 void *setup_arg)
{
	const char *argv[64];
	int n = 0;

	/* MB_TEST_MEMBROKERD runs the suite against another build (e.g. to measure a change). */
	argv[n++] = getenv("MB_TEST_MEMBROKERD") ? getenv("MB_TEST_MEMBROKERD") : MEMBROKERD_PATH;
	argv[n++] = "--listen";
	argv[n++] = b->address;
	for (int i = 0; extra_args && extra_args[i] && n < 62; i++)
		argv[n++] = extra_args[i];
	argv[n] = NULL;

	b->pid = fork();
	if (b->pid < 0)
		return -1;
	if (b->pid == 0) {
		int fd = open(b->log, O_WRONLY | O_CREAT | O_APPEND, 0600);
		if (fd >= 0) {
			dup2(fd, 1);
			dup2(fd, 2);
			close(fd);
		}
		unsetenv("NOTIFY_SOCKET");
		/* Sanitized builds: nng 1.5.2's own shutdown leak (see the file). */
		setenv("LSAN_OPTIONS", "suppressions=" MB_SOURCE_DIR "/tests/lsan-nng.supp", 0);
		/* A broker must not outlive a test that crashed before stopping it. */
		prctl(PR_SET_PDEATHSIG, SIGTERM);
		if (setup != NULL)
			setup(setup_arg);
		execv(argv[0], (char *const *)argv);
		_exit(127);
	}
	if (!mb_test_wait_for(broker_serves, b, 20000) || b->pid < 0) {
		fprintf(stderr, "harness: membrokerd did not start on %s (log %s)\n", b->address,
			b->log);
		char cmd[300];
		snprintf(cmd, sizeof(cmd), "cat %s >&2", b->log);
		if (system(cmd) != 0)
			fprintf(stderr, "harness: cannot show the log\n");
		if (b->pid > 0)
			mb_test_broker_kill(b);
		return -1;
	}
	return 0;
}

int mb_test_broker_start(mb_test_broker *b, const char *const *extra_args)
{
	memset(b, 0, sizeof(*b));
	if (make_dir(b) != 0)
		return -1;
	snprintf(b->address, sizeof(b->address), "ipc://%s/mb.sock", b->dir);
	return spawn(b, extra_args, NULL, NULL);
}

int mb_test_broker_start_at(mb_test_broker *b, const char *address, const char *const *extra_args)
{
	return mb_test_broker_start_with(b, address, extra_args, NULL, NULL);
}

int mb_test_broker_start_with(mb_test_broker *b, const char *address, const char *const *extra_args,
			      void (*setup)(void *arg), void *arg)
{
	char dir[sizeof(b->dir)];
	bool keep = b->dir[0] != '\0' && b->pid <= 0;

	/* A restart after mb_test_broker_kill() reuses the directory. */
	if (keep)
		memcpy(dir, b->dir, sizeof(dir));
	memset(b, 0, sizeof(*b));
	if (keep) {
		memcpy(b->dir, dir, sizeof(dir));
		snprintf(b->log, sizeof(b->log), "%s/broker.log", b->dir);
	} else if (make_dir(b) != 0) {
		return -1;
	}
	snprintf(b->address, sizeof(b->address), "%s", address);
	return spawn(b, extra_args, setup, arg);
}

static void remove_dir(mb_test_broker *b)
{
	char cmd[200];
	if (b->dir[0] == '\0')
		return;
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", b->dir);
	if (system(cmd) != 0)
		fprintf(stderr, "harness: cannot remove %s\n", b->dir);
	b->dir[0] = '\0';
}

int mb_test_broker_stop(mb_test_broker *b)
{
	int status = -1;
	if (b->pid > 0) {
		kill(b->pid, SIGTERM);
		long long deadline = now_ms() + 20000;
		for (;;) {
			pid_t r = waitpid(b->pid, &status, WNOHANG);
			if (r == b->pid || (r < 0 && errno != EINTR))
				break;
			if (now_ms() > deadline) {
				fprintf(stderr, "harness: membrokerd ignored SIGTERM, killing\n");
				kill(b->pid, SIGKILL);
				waitpid(b->pid, &status, 0);
				break;
			}
			usleep(2000);
		}
		b->pid = -1;
	}
	remove_dir(b);
	return status;
}

void mb_test_broker_kill(mb_test_broker *b)
{
	if (b->pid > 0) {
		kill(b->pid, SIGKILL);
		waitpid(b->pid, NULL, 0);
	}
	b->pid = -1;
}

int mb_test_in_child(void (*fn)(void *arg), void *arg)
{
	int status = -1;
	pid_t pid = fork();
	if (pid < 0)
		return -1;
	if (pid == 0) {
		fn(arg);
		_exit(0);
	}
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	return status;
}

void mb_test_fail_hr(const char *expr, int32_t got, int32_t want, const char *file, int line)
{
	char why[300];
	snprintf(why, sizeof(why), "%s", mb_last_error());
	print_error("%s:%d: %s\n    expected %s (0x%08X), got %s (0x%08X)%s%s\n", file, line, expr,
		    mb_hresult_name(want), (unsigned)want, mb_hresult_name(got), (unsigned)got,
		    why[0] ? ": " : "", why);
	_fail(file, line);
}
