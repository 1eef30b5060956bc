/*
 * test_proc_fd.c: a process running under the broker's own uid cannot reach the clients' sections
 * through the broker.
 *
 * The broker holds every client's memfd. Linux lets a process open another's descriptors through
 * /proc/<pid>/fd, take them with pidfd_getfd(2) or ptrace it whenever both run under the same uid
 * and the target is dumpable, so before the broker made itself non-dumpable any client started
 * under the daemon's user could read and write every other client's memory. Asserted here, with
 * the broker running as an unprivileged uid and an attacker of that same uid without
 * capabilities: opening /proc/<broker>/fd/<section>, listing that directory, pidfd_getfd and
 * PTRACE_ATTACH all fail, and the victim's memory is unchanged.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/ptrace.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "hostile.h"
#include "membroker.h"

#define MiB	   ((SIZE_T)1 << 20)
#define BROKER_UID 65534 /* nobody */
#define BROKER_GID 65534

typedef struct broker {
	pid_t pid;
	char dir[64];
	char address[128];
} broker;

static void start_broker(broker *b)
{
	snprintf(b->dir, sizeof(b->dir), "/tmp/mbprocfd.XXXXXX");
	assert_non_null(mkdtemp(b->dir));
	assert_int_equal(chown(b->dir, BROKER_UID, BROKER_GID), 0);
	snprintf(b->address, sizeof(b->address), "ipc://%s/mb.sock", b->dir);
	b->pid = fork();
	assert_true(b->pid >= 0);
	if (b->pid == 0) {
		char log[96];
		snprintf(log, sizeof(log), "%s/broker.log", b->dir);
		int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
		if (fd >= 0) {
			dup2(fd, 1);
			dup2(fd, 2);
		}
		if (setgroups(0, NULL) != 0 || setgid(BROKER_GID) != 0 || setuid(BROKER_UID) != 0)
			_exit(126);
		execl(MEMBROKERD_PATH, MEMBROKERD_PATH, "--listen", b->address, "--budget", "64M",
		      (char *)NULL);
		_exit(127);
	}
}

static void stop_broker(broker *b)
{
	char cmd[128];
	kill(b->pid, SIGTERM);
	waitpid(b->pid, NULL, 0);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", b->dir);
	assert_int_equal(system(cmd), 0);
}

typedef struct attempt {
	pid_t broker;
	int fd;
} attempt;

/* Bits of the attacker's exit code: what it managed. */
enum {
	GOT_OPEN = 1,	  /* opened /proc/<broker>/fd/<section> */
	GOT_LIST = 2,	  /* listed /proc/<broker>/fd */
	GOT_GETFD = 4,	  /* pidfd_getfd of the section */
	GOT_PTRACE = 8,	  /* PTRACE_ATTACH */
	GOT_NOTHING = 16, /* could not even become the broker's uid */
};

static void attacker(void *arg)
{
	const attempt *a = arg;
	char path[64];
	int got = 0;

	if (setgroups(0, NULL) != 0 || setgid(BROKER_GID) != 0 || setuid(BROKER_UID) != 0)
		_exit(GOT_NOTHING);
	snprintf(path, sizeof(path), "/proc/%d/fd/%d", (int)a->broker, a->fd);
	int fd = open(path, O_RDWR);
	if (fd >= 0) {
		uint8_t *p = mmap(NULL, MiB, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
		if (p != MAP_FAILED)
			munmap(p, MiB);
		close(fd);
		got |= GOT_OPEN;
	}
	snprintf(path, sizeof(path), "/proc/%d/fd", (int)a->broker);
	DIR *d = opendir(path);
	if (d != NULL) {
		if (readdir(d) != NULL)
			got |= GOT_LIST;
		closedir(d);
	}
#if defined(SYS_pidfd_open) && defined(SYS_pidfd_getfd)
	int pfd = (int)syscall(SYS_pidfd_open, a->broker, 0);
	if (pfd >= 0) {
		int stolen = (int)syscall(SYS_pidfd_getfd, pfd, a->fd, 0);
		if (stolen >= 0) {
			got |= GOT_GETFD;
			close(stolen);
		}
		close(pfd);
	}
#endif
	if (ptrace(PTRACE_ATTACH, a->broker, NULL, NULL) == 0) {
		got |= GOT_PTRACE;
		ptrace(PTRACE_DETACH, a->broker, NULL, NULL);
	}
	_exit(got);
}

static void test_same_uid_cannot_reach_sections(void **state)
{
	broker b;
	mb_client *victim = NULL;
	uint8_t *mem = NULL;
	HRESULT hr = E_FAIL;
	(void)state;

	start_broker(&b);
	for (int i = 0; i < 2000 && hr != S_OK; i++) {
		hr = mb_connect(b.address, &victim);
		if (hr != S_OK)
			usleep(10 * 1000);
	}
	assert_hr(hr, S_OK);
	assert_hr(mb_virtual_alloc(victim, NULL, MiB, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE,
				   eTaskCritical, (void **)&mem),
		  S_OK);
	memset(mem, 0x3C, MiB);

	attempt a = {.broker = b.pid, .fd = mb_hostile_newest_memfd(b.pid)};
	assert_true(a.fd >= 0);
	pid_t child = mb_hostile_fork(attacker, &a);
	int status = 0;
	assert_int_equal(waitpid(child, &status, 0), child);
	assert_true(WIFEXITED(status));
	int got = WEXITSTATUS(status);
	if (got != 0)
		print_error("a process of the broker's uid got:%s%s%s%s%s\n",
			    got & GOT_OPEN ? " open" : "", got & GOT_LIST ? " list" : "",
			    got & GOT_GETFD ? " pidfd_getfd" : "",
			    got & GOT_PTRACE ? " ptrace" : "",
			    got & GOT_NOTHING ? " (could not drop to the broker's uid)" : "");
	assert_int_equal(got, 0);

	for (size_t i = 0; i < MiB; i += 4096)
		assert_int_equal(mem[i], 0x3C);
	mb_disconnect(victim);
	stop_broker(&b);
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_same_uid_cannot_reach_sections),
	};
	mb_hostile_roles(argc, argv);
	if (geteuid() != 0) {
		fprintf(stderr,
			"test_proc_fd: needs root (it runs the broker as nobody); skipped\n");
		return 77;
	}
	return cmocka_run_group_tests(tests, NULL, NULL);
}
