/*
 * bench_util.c: a broker of the benchmark's own, child processes with a captured stdout, medians.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bench_util.h"

extern char **environ;

uint64_t bench_now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

uint64_t bench_cpu_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

double bench_median(double *v, size_t n)
{
	if (n == 0)
		return 0;
	qsort(v, n, sizeof(*v), cmp_double);
	return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

void bench_loadavg(char *out, size_t len)
{
	FILE *f = fopen("/proc/loadavg", "r");
	double a = 0, b = 0, c = 0;

	if (f != NULL) {
		if (fscanf(f, "%lf %lf %lf", &a, &b, &c) != 3)
			a = b = c = 0;
		fclose(f);
	}
	snprintf(out, len, "%.2f %.2f %.2f", a, b, c);
}

void bench_broker_start(bench_broker *b, const char *daemon_path, const char *commit_credit)
{
	char log[128], sock[96];
	posix_spawn_file_actions_t fa;

	snprintf(b->dir, sizeof(b->dir), "/tmp/mbbench.XXXXXX");
	if (mkdtemp(b->dir) == NULL) {
		perror("mkdtemp");
		exit(1);
	}
	snprintf(sock, sizeof(sock), "%s/mb.sock", b->dir);
	snprintf(b->url, sizeof(b->url), "ipc://%s", sock);
	snprintf(log, sizeof(log), "%s/broker.log", b->dir);
	char *argv[] = {(char *)daemon_path,
			"--listen",
			b->url,
			"--budget",
			"8G",
			commit_credit != NULL ? "--commit-credit" : NULL,
			(char *)commit_credit,
			NULL};
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_addopen(&fa, 1, log, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	posix_spawn_file_actions_adddup2(&fa, 1, 2);
	unsetenv("NOTIFY_SOCKET");
	if (posix_spawn(&b->pid, daemon_path, &fa, NULL, argv, environ) != 0) {
		perror("posix_spawn membrokerd");
		exit(1);
	}
	posix_spawn_file_actions_destroy(&fa);
	for (int i = 0; i < 2000; i++) {
		struct stat st;
		char fdsock[160];
		snprintf(fdsock, sizeof(fdsock), "%s.fd", sock);
		if (stat(sock, &st) == 0 && stat(fdsock, &st) == 0)
			return;
		if (waitpid(b->pid, NULL, WNOHANG) == b->pid) {
			fprintf(stderr, "membrokerd exited at start (log: %s)\n", log);
			exit(1);
		}
		usleep(10000);
	}
	fprintf(stderr, "membrokerd did not start within 20 s (log: %s)\n", log);
	kill(b->pid, SIGKILL);
	exit(1);
}

void bench_broker_stop(bench_broker *b)
{
	char path[192];

	if (b->pid > 0) {
		kill(b->pid, SIGTERM);
		waitpid(b->pid, NULL, 0);
		b->pid = -1;
	}
	const char *files[] = {"mb.sock", "mb.sock.fd", "mb.sock.admin", "broker.log"};
	for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
		snprintf(path, sizeof(path), "%s/%s", b->dir, files[i]);
		unlink(path);
	}
	rmdir(b->dir);
}

int bench_run(char *const argv[], char *out, size_t len)
{
	posix_spawn_file_actions_t fa;
	int p[2], status;
	size_t got = 0;
	pid_t pid;

	if (pipe2(p, O_CLOEXEC) != 0)
		return -1;
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_adddup2(&fa, p[1], 1);
	int rv = posix_spawn(&pid, argv[0], &fa, NULL, argv, environ);
	posix_spawn_file_actions_destroy(&fa);
	close(p[1]);
	if (rv != 0) {
		close(p[0]);
		return -1;
	}
	for (;;) {
		ssize_t n = read(p[0], out + got, len - 1 - got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		got += (size_t)n;
		if (got == len - 1)
			break;
	}
	out[got] = '\0';
	close(p[0]);
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : -1;
}
