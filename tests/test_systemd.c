/*
 * test_systemd.c: membrokerd as systemd sees it, without systemd as PID 1: the sd_notify sequence
 * captured on a NOTIFY_SOCKET datagram socket owned by the test (READY after listening, STATUS,
 * WATCHDOG cadence, RELOADING/READY around a reload, STOPPING), configuration reload (valid and
 * invalid), and `systemd-analyze verify` of the shipped unit.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"
#include "membroker.h"

#ifndef MB_SOURCE_DIR
#error MB_SOURCE_DIR must name the source tree
#endif

typedef struct notify_rig {
	char dir[64];
	char sock_path[128];
	char address[160];
	char config[128];
	char log[128];
	int fd;
	pid_t pid;
	char seen[16384]; /* every datagram, separated by '|' */
} notify_rig;

static void rig_open(notify_rig *r)
{
	struct sockaddr_un sun = {.sun_family = AF_UNIX};

	memset(r, 0, sizeof(*r));
	snprintf(r->dir, sizeof(r->dir), "/tmp/mbsd.XXXXXX");
	assert_non_null(mkdtemp(r->dir));
	snprintf(r->sock_path, sizeof(r->sock_path), "%s/notify", r->dir);
	snprintf(r->address, sizeof(r->address), "ipc://%s/mb.sock", r->dir);
	snprintf(r->config, sizeof(r->config), "%s/membroker.conf", r->dir);
	snprintf(r->log, sizeof(r->log), "%s/broker.log", r->dir);
	r->fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	assert_true(r->fd >= 0);
	assert_true(strlen(r->sock_path) < sizeof(sun.sun_path));
	memcpy(sun.sun_path, r->sock_path, strlen(r->sock_path) + 1);
	assert_int_equal(bind(r->fd, (struct sockaddr *)&sun, sizeof(sun)), 0);
}

static void write_file(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	fputs(text, f);
	fclose(f);
}

static void rig_start(notify_rig *r, const char *watchdog_usec)
{
	r->pid = fork();
	assert_true(r->pid >= 0);
	if (r->pid == 0) {
		int fd = open(r->log, O_WRONLY | O_CREAT | O_APPEND, 0600);
		if (fd >= 0) {
			dup2(fd, 1);
			dup2(fd, 2);
		}
		setenv("NOTIFY_SOCKET", r->sock_path, 1);
		if (watchdog_usec != NULL)
			setenv("WATCHDOG_USEC", watchdog_usec, 1);
		execl(MEMBROKERD_PATH, MEMBROKERD_PATH, "--listen", r->address, "--config",
		      r->config, "--budget", "64M", (char *)NULL);
		_exit(127);
	}
}

/* Reads datagrams until one contains `want` (appending all to r->seen) or timeout_ms passes. */
static bool rig_wait_for(notify_rig *r, const char *want, int timeout_ms)
{
	char buf[4096];
	int waited = 0;

	while (waited < timeout_ms) {
		struct pollfd p = {.fd = r->fd, .events = POLLIN};
		if (poll(&p, 1, 50) == 1) {
			ssize_t n = recv(r->fd, buf, sizeof(buf) - 1, 0);
			if (n > 0) {
				buf[n] = '\0';
				strncat(r->seen, buf, sizeof(r->seen) - strlen(r->seen) - 2);
				strncat(r->seen, "|", sizeof(r->seen) - strlen(r->seen) - 1);
				if (strstr(buf, want) != NULL)
					return true;
			}
		} else {
			waited += 50;
		}
	}
	return false;
}

static int count_of(const char *hay, const char *needle)
{
	int n = 0;
	for (const char *p = hay; (p = strstr(p, needle)) != NULL; p += strlen(needle))
		n++;
	return n;
}

static void rig_stop(notify_rig *r)
{
	int status = 0;
	char cmd[128];

	if (r->pid > 0) {
		kill(r->pid, SIGTERM);
		assert_true(rig_wait_for(r, "STOPPING=1", 20000));
		assert_int_equal(waitpid(r->pid, &status, 0), r->pid);
		assert_true(WIFEXITED(status));
		assert_int_equal(WEXITSTATUS(status), 0);
	}
	close(r->fd);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", r->dir);
	assert_int_equal(system(cmd), 0);
}

static void test_notify_sequence(void **state)
{
	notify_rig r;
	mb_client *c;

	(void)state;
	rig_open(&r);
	write_file(r.config, "[broker]\nceilings = 90,97,100\n");
	/* 1 s watchdog: the broker must ping about every 500 ms, each after a real round trip. */
	rig_start(&r, "1000000");
	assert_true(rig_wait_for(&r, "READY=1", 20000));
	/* READY comes after both sockets listen: a client connects at once. */
	assert_int_equal(mb_connect(r.address, &c), S_OK);
	assert_true(strstr(r.seen, "STATUS=") != NULL);
	/* Several watchdog pings; the count, not the timing, is what is checked. */
	for (int i = 0; i < 3; i++)
		assert_true(rig_wait_for(&r, "WATCHDOG=1", 20000));
	/* Live figures: the connected client shows up in STATUS. */
	assert_true(rig_wait_for(&r, "STATUS=1 clients", 20000));

	/* Reload: RELOADING=1, then READY=1 again. */
	kill(r.pid, SIGHUP);
	assert_true(rig_wait_for(&r, "RELOADING=1", 20000));
	assert_true(rig_wait_for(&r, "READY=1", 20000));
	assert_int_equal(count_of(r.seen, "READY=1"), 2);

	mb_disconnect(c);
	rig_stop(&r);
}

static void test_reload_valid_and_invalid(void **state)
{
	notify_rig r;
	mb_client *c;
	void *p = NULL, *q = NULL;
	char logtext[8192] = "";

	(void)state;
	rig_open(&r);
	write_file(r.config, "[limits]\nclient_max = 8M\n");
	rig_start(&r, NULL);
	assert_true(rig_wait_for(&r, "READY=1", 20000));
	assert_int_equal(mb_connect(r.address, &c), S_OK);
	assert_int_equal(
	    mb_virtual_alloc(c, NULL, 16 << 20, MEM_RESERVE, PAGE_READWRITE, eTaskCritical, &p),
	    S_OK);
	/* 12 MiB is over the client limit of 8 MiB. */
	assert_int_equal(
	    mb_virtual_alloc(c, p, 12 << 20, MEM_COMMIT, PAGE_READWRITE, eTaskCritical, &q),
	    E_OUTOFMEMORY);

	/* A valid change applies without dropping the client. */
	write_file(r.config, "[limits]\nclient_max = 32M\n");
	kill(r.pid, SIGHUP);
	assert_true(rig_wait_for(&r, "RELOADING=1", 20000));
	assert_true(rig_wait_for(&r, "READY=1", 20000));
	assert_int_equal(
	    mb_virtual_alloc(c, p, 12 << 20, MEM_COMMIT, PAGE_READWRITE, eTaskCritical, &q), S_OK);
	assert_int_equal(mb_virtual_free(c, q, 12 << 20, MEM_DECOMMIT), S_OK);

	/* An invalid file is refused with its line, and the running configuration stays. */
	write_file(r.config, "[limits]\nclient_max = 4M\n[broker]\nceilings = 99,50,100\n");
	kill(r.pid, SIGHUP);
	assert_true(rig_wait_for(&r, "RELOADING=1", 20000));
	assert_true(rig_wait_for(&r, "READY=1", 20000));
	assert_int_equal(
	    mb_virtual_alloc(c, p, 12 << 20, MEM_COMMIT, PAGE_READWRITE, eTaskCritical, &q), S_OK);
	FILE *f = fopen(r.log, "r");
	assert_non_null(f);
	size_t n = fread(logtext, 1, sizeof(logtext) - 1, f);
	logtext[n] = '\0';
	fclose(f);
	assert_non_null(strstr(logtext, "membroker.conf:4:"));
	assert_non_null(strstr(logtext, "reload refused"));

	mb_disconnect(c);
	rig_stop(&r);
}

static void test_invalid_config_at_start(void **state)
{
	notify_rig r;
	int status = 0;

	(void)state;
	rig_open(&r);
	write_file(r.config, "[broker]\nbudget = lots\n");
	rig_start(&r, NULL);
	assert_int_equal(waitpid(r.pid, &status, 0), r.pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 2);
	r.pid = -1;
	rig_stop(&r);
}

static const char *self_path;

/* A group nobody is in, given to the access child as its only supplementary group. */
#define SUPPLEMENTARY_GID 4242

/* Child mode: become nobody (with supplementary group `group` unless NULL), connect, exit 0
 * connected / 3 refused by the broker / 4 other. */
static int access_child(const char *address, const char *group)
{
	gid_t g = group != NULL ? (gid_t)atoi(group) : 0;
	mb_client *c;
	HRESULT hr;

	if (setgroups(group != NULL ? 1 : 0, &g) != 0 || setgid(65534) != 0 || setuid(65534) != 0)
		return 5;
	hr = mb_connect(address, &c);
	if (hr == S_OK) {
		mb_disconnect(c);
		return 0;
	}
	fprintf(stderr, "access child: %s\n", mb_last_error());
	return hr == HOST_E_CLRNOTAVAILABLE && strstr(mb_last_error(), "not allowed") ? 3 : 4;
}

static int run_access_child(const char *address, gid_t group)
{
	char g[16];
	int status = -1;
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		snprintf(g, sizeof(g), "%u", (unsigned)group);
		execl(self_path, self_path, "--access-child", address,
		      group != (gid_t)-1 ? g : (char *)NULL, (char *)NULL);
		_exit(127);
	}
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	return WEXITSTATUS(status);
}

static void test_access_control(void **state)
{
	notify_rig r;
	struct stat st;
	char sock[200];

	(void)state;
	rig_open(&r);
	/* Others may open the sockets (0666) so that [access] is what decides. */
	write_file(r.config, "[broker]\nsocket_mode = 0666\n[access]\nuids = 1000-1999\n");
	assert_int_equal(chmod(r.dir, 0755), 0);
	rig_start(&r, NULL);
	assert_true(rig_wait_for(&r, "READY=1", 20000));
	snprintf(sock, sizeof(sock), "%s/mb.sock", r.dir);
	assert_int_equal(stat(sock, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0666);
	snprintf(sock, sizeof(sock), "%s/mb.sock.fd", r.dir);
	assert_int_equal(stat(sock, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0666);
	assert_int_equal(run_access_child(r.address, (gid_t)-1), 3);

	/* A listed supplementary group lets nobody in (SO_PEERGROUPS of its connection); without
	 * the group it stays out. */
	write_file(r.config,
		   "[broker]\nsocket_mode = 0666\n[access]\nuids = 1000-1999\ngids = 4242\n");
	kill(r.pid, SIGHUP);
	assert_true(rig_wait_for(&r, "RELOADING=1", 20000));
	assert_true(rig_wait_for(&r, "READY=1", 20000));
	assert_int_equal(run_access_child(r.address, SUPPLEMENTARY_GID), 0);
	assert_int_equal(run_access_child(r.address, SUPPLEMENTARY_GID + 1), 3);
	assert_int_equal(run_access_child(r.address, (gid_t)-1), 3);

	/* Allowed after a reload that lists the uid. */
	write_file(r.config, "[broker]\nsocket_mode = 0666\n[access]\nuids = 1000-1999, 65534\n");
	kill(r.pid, SIGHUP);
	assert_true(rig_wait_for(&r, "RELOADING=1", 20000));
	assert_true(rig_wait_for(&r, "READY=1", 20000));
	assert_int_equal(run_access_child(r.address, (gid_t)-1), 0);
	rig_stop(&r);
}

static void test_unit_verifies_clean(void **state)
{
	char dir[] = "/tmp/mbunit.XXXXXX";
	char cmd[1024];
	char out[4096] = "";

	(void)state;
	if (system("command -v systemd-analyze >/dev/null 2>&1") != 0)
		fail_msg("systemd-analyze is missing (package systemd)");
	assert_non_null(mkdtemp(dir));
	/* The unit names the installed path; verify it against the binary of this build. */
	snprintf(
	    cmd, sizeof(cmd),
	    "sed 's|/usr/sbin/membrokerd|%s|' %s/systemd/membroker.service > %s/membroker.service"
	    " && systemd-analyze verify --man=no %s/membroker.service 2>&1",
	    MEMBROKERD_PATH, MB_SOURCE_DIR, dir, dir);
	FILE *p = popen(cmd, "r");
	assert_non_null(p);
	size_t n = fread(out, 1, sizeof(out) - 1, p);
	out[n] = '\0';
	int rc = pclose(p);
	if (n > 0)
		fprintf(stderr, "systemd-analyze verify printed:\n%s\n", out);
	assert_int_equal(n, 0);
	assert_int_equal(rc, 0);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	assert_int_equal(system(cmd), 0);
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_notify_sequence),
	    cmocka_unit_test(test_reload_valid_and_invalid),
	    cmocka_unit_test(test_invalid_config_at_start),
	    cmocka_unit_test(test_access_control),
	    cmocka_unit_test(test_unit_verifies_clean),
	};
	if ((argc == 3 || argc == 4) && strcmp(argv[1], "--access-child") == 0)
		return access_child(argv[2], argc == 4 ? argv[3] : NULL);
	self_path = argv[0];
	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
