/*
 * unit_address.c: the one address rule of broker, library and membrokerctl (common/mb_address.c).
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "mb_address.h"
#include "membroker.h"

static void clear_env(void)
{
	unsetenv(MB_ADDRESS_ENV);
	unsetenv("XDG_RUNTIME_DIR");
}

static void test_given_wins(void **state)
{
	char buf[256];

	(void)state;
	setenv(MB_ADDRESS_ENV, "ipc:///tmp/from-env.sock", 1);
	assert_int_equal(mb_address_resolve("abstract://given", buf, sizeof(buf)), 0);
	assert_string_equal(buf, "abstract://given");
	clear_env();
}

static void test_env_over_default(void **state)
{
	char buf[256];

	(void)state;
	setenv(MB_ADDRESS_ENV, "ipc:///tmp/from-env.sock", 1);
	assert_int_equal(mb_address_resolve(NULL, buf, sizeof(buf)), 0);
	assert_string_equal(buf, "ipc:///tmp/from-env.sock");
	/* Empty means unset. */
	setenv(MB_ADDRESS_ENV, "", 1);
	assert_int_equal(mb_address_resolve(NULL, buf, sizeof(buf)), 0);
	assert_string_equal(buf, MB_DEFAULT_ADDRESS);
	clear_env();
}

/* The default does not depend on XDG_RUNTIME_DIR: clients of every user find the system broker. */
static void test_default_ignores_session(void **state)
{
	char buf[256];

	(void)state;
	clear_env();
	setenv("XDG_RUNTIME_DIR", "/run/user/1000", 1);
	assert_int_equal(mb_address_resolve(NULL, buf, sizeof(buf)), 0);
	assert_string_equal(buf, MB_DEFAULT_ADDRESS);
	assert_string_equal(mb_address_ipc_path(buf), "/run/membroker/membroker.sock");
	clear_env();
}

/* As another uid (only possible when the test runs as root) the default is the same. */
static void test_default_same_for_other_uid(void **state)
{
	int status;
	pid_t pid;

	(void)state;
	if (geteuid() != 0)
		skip();
	clear_env();
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		char buf[256];
		if (setresgid(65534, 65534, 65534) != 0 || setresuid(65534, 65534, 65534) != 0)
			_exit(3);
		setenv("XDG_RUNTIME_DIR", "/run/user/65534", 1);
		if (mb_address_resolve(NULL, buf, sizeof(buf)) != 0)
			_exit(4);
		_exit(strcmp(buf, MB_DEFAULT_ADDRESS) == 0 ? 0 : 5);
	}
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
}

static void test_invalid(void **state)
{
	static const char *const bad[] = {"tcp://127.0.0.1:1", "ipc://", "abstract://", "",
					  "/run/membroker/membroker.sock"};
	char buf[256], small[8];

	(void)state;
	clear_env();
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_int_equal(mb_address_resolve(bad[i], buf, sizeof(buf)), -EINVAL);
	setenv(MB_ADDRESS_ENV, "tcp://127.0.0.1:1", 1);
	assert_int_equal(mb_address_resolve(NULL, buf, sizeof(buf)), -EINVAL);
	clear_env();
	assert_int_equal(mb_address_resolve(NULL, small, sizeof(small)), -EINVAL);
	assert_int_equal(mb_address_resolve(NULL, NULL, 0), -EINVAL);
}

static void test_fd_socket_beside_rpc(void **state)
{
	struct sockaddr_un sun;
	socklen_t len;

	(void)state;
	assert_int_equal(mb_address_fd_socket(MB_DEFAULT_ADDRESS, &sun, &len), 0);
	assert_string_equal(sun.sun_path, "/run/membroker/membroker.sock.fd");
	assert_int_equal(mb_address_fd_socket("abstract://mb", &sun, &len), 0);
	assert_int_equal(sun.sun_path[0], '\0');
	assert_memory_equal(sun.sun_path + 1, "mb.fd", 5);
	assert_int_equal(len, offsetof(struct sockaddr_un, sun_path) + 6);
	assert_int_equal(mb_address_fd_socket("tcp://x:1", &sun, &len), -EINVAL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_given_wins),
	    cmocka_unit_test(test_env_over_default),
	    cmocka_unit_test(test_default_ignores_session),
	    cmocka_unit_test(test_default_same_for_other_uid),
	    cmocka_unit_test(test_invalid),
	    cmocka_unit_test(test_fd_socket_beside_rpc),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
