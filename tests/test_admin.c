/*
 * test_admin.c: the admin channel and membrokerctl against the real membrokerd (harness.c): status,
 * clients and metrics read back (JSON through json-c, the Prometheus text line by line), live
 * budget changes seen by clients, reload of a changed configuration file, access control for
 * unprivileged users, and the exit codes for a broker that is down and for usage errors.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <json-c/json.h>

#include "harness.h"
#include "membroker.h"

#define MIB	   (1024ULL * 1024ULL)
#define BUDGET_ARG "256M"
#define BUDGET	   (256 * MIB)
#define NOBODY	   65534

#ifndef MEMBROKERCTL_PATH
#error "MEMBROKERCTL_PATH must name the membrokerctl binary"
#endif

static const char *const broker_args[] = {"--budget", BUDGET_ARG, NULL};

/* ---- fixture ---- */

typedef struct fixture {
	mb_test_broker broker;
	char config[256]; /* a configuration file in the broker's directory, or empty */
} fixture;

static int setup(void **state)
{
	fixture *f = calloc(1, sizeof(*f));

	if (f == NULL || mb_test_broker_start(&f->broker, broker_args) != 0) {
		free(f);
		return -1;
	}
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	fixture *f = *state;

	mb_test_broker_stop(&f->broker);
	free(f);
	return 0;
}

static void write_file(const char *path, const char *text)
{
	FILE *fp = fopen(path, "w");

	assert_non_null(fp);
	assert_true(fputs(text, fp) >= 0);
	assert_int_equal(fclose(fp), 0);
}

/* A broker reading a configuration file with a 64 MiB client limit. */
static int setup_config(void **state)
{
	char dir[] = "/tmp/mbadmin.XXXXXX";
	fixture *f = calloc(1, sizeof(*f));
	const char *args[] = {"--budget", BUDGET_ARG, "--config", NULL, NULL};

	if (f == NULL || mkdtemp(dir) == NULL) {
		free(f);
		return -1;
	}
	snprintf(f->config, sizeof(f->config), "%s/membroker.conf", dir);
	write_file(f->config, "[limits]\nclient_max = 64M\n");
	args[3] = f->config;
	if (mb_test_broker_start(&f->broker, args) != 0) {
		free(f);
		return -1;
	}
	*state = f;
	return 0;
}

static int teardown_config(void **state)
{
	fixture *f = *state;
	char *slash;

	mb_test_broker_stop(&f->broker);
	unlink(f->config);
	slash = strrchr(f->config, '/');
	*slash = '\0';
	rmdir(f->config);
	free(f);
	return 0;
}

/* ---- running membrokerctl ---- */

typedef struct ctl_run {
	int code; /* exit code, or -1 if it did not exit normally */
	char out[256 * 1024];
	size_t len;
	char err[4096];
} ctl_run;

/* Credentials the child takes before exec (0: keep root's). */
typedef struct ctl_creds {
	uid_t uid;
	gid_t gid;
} ctl_creds;

static void read_all(int fd, char *buf, size_t cap, size_t *len)
{
	*len = 0;
	for (;;) {
		ssize_t n = read(fd, buf + *len, cap - 1 - *len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		*len += (size_t)n;
		if (*len >= cap - 1)
			break;
	}
	buf[*len] = '\0';
}

/* Runs membrokerctl with args (NULL-terminated) and env MEMBROKER_ADDRESS unset. */
/* Runs membrokerctl with args, as creds (NULL: as the test), with MEMBROKER_ADDRESS set to
 * env_address (NULL: unset); its exit code, stdout and stderr end up in r. */
static void run_ctl_env(ctl_run *r, const ctl_creds *creds, const char *env_address,
			const char *const *args)
{
	const char *argv[32];
	int out[2], err[2], n = 0, status;
	pid_t pid;
	size_t elen;

	argv[n++] = MEMBROKERCTL_PATH;
	for (int i = 0; args[i] != NULL && n < 31; i++)
		argv[n++] = args[i];
	argv[n] = NULL;
	assert_int_equal(pipe(out), 0);
	assert_int_equal(pipe(err), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		dup2(out[1], 1);
		dup2(err[1], 2);
		close(out[0]);
		close(out[1]);
		close(err[0]);
		close(err[1]);
		if (env_address != NULL)
			setenv("MEMBROKER_ADDRESS", env_address, 1);
		else
			unsetenv("MEMBROKER_ADDRESS");
		if (creds != NULL && (setgroups(0, NULL) != 0 || setgid(creds->gid) != 0 ||
				      setuid(creds->uid) != 0)) {
			perror("setuid");
			_exit(126);
		}
		execv(argv[0], (char *const *)argv);
		_exit(127);
	}
	close(out[1]);
	close(err[1]);
	/* Small outputs: stderr fits the pipe, so reading stdout to the end first cannot block. */
	read_all(out[0], r->out, sizeof(r->out), &r->len);
	read_all(err[0], r->err, sizeof(r->err), &elen);
	close(out[0]);
	close(err[0]);
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	r->code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static void run_ctl_as(ctl_run *r, const ctl_creds *creds, const char *const *args)
{
	run_ctl_env(r, creds, NULL, args);
}

static void run_ctl(ctl_run *r, const char *const *args)
{
	run_ctl_env(r, NULL, NULL, args);
}

static void expect_code(const ctl_run *r, int code)
{
	if (r->code != code)
		fprintf(stderr, "membrokerctl exited %d, expected %d\nstdout: %s\nstderr: %s\n",
			r->code, code, r->out, r->err);
	assert_int_equal(r->code, code);
}

/* membrokerctl --address <broker> [--json] cmd [arg]; exit 0 expected; returns the parsed JSON
 * when json (to json_object_put), else NULL. */
static json_object *ctl_ok(const fixture *f, ctl_run *r, bool json, const char *cmd,
			   const char *arg)
{
	const char *args[8];
	int n = 0;
	json_object *o = NULL;

	args[n++] = "--address";
	args[n++] = f->broker.address;
	if (json)
		args[n++] = "--json";
	args[n++] = cmd;
	if (arg != NULL)
		args[n++] = arg;
	args[n] = NULL;
	run_ctl(r, args);
	expect_code(r, 0);
	if (json) {
		o = json_tokener_parse(r->out);
		if (o == NULL)
			fprintf(stderr, "not JSON: %s\n", r->out);
		assert_non_null(o);
	}
	return o;
}

static uint64_t json_u64(json_object *o, const char *key)
{
	json_object *v;

	if (!json_object_object_get_ex(o, key, &v)) {
		fprintf(stderr, "no \"%s\" in %s\n", key, json_object_to_json_string(o));
		fail();
	}
	return json_object_get_uint64(v);
}

static const char *json_str(json_object *o, const char *key)
{
	json_object *v;

	assert_true(json_object_object_get_ex(o, key, &v));
	return json_object_get_string(v);
}

/* A client with one reservation of reserve bytes, commit bytes of it committed at level. */
static mb_client *client_with(const fixture *f, const char *name, SIZE_T reserve, SIZE_T commit,
			      EMemoryCriticalLevel level)
{
	mb_client *c = NULL;
	void *base = NULL, *mem = NULL;

	assert_int_equal(mb_connect_named(f->broker.address, name, &c), S_OK);
	assert_int_equal(
	    mb_virtual_alloc(c, NULL, reserve, MEM_RESERVE, PAGE_READWRITE, level, &base), S_OK);
	if (commit > 0)
		assert_int_equal(
		    mb_virtual_alloc(c, base, commit, MEM_COMMIT, PAGE_READWRITE, level, &mem),
		    S_OK);
	return c;
}

/* ---- status ---- */

static void test_status(void **state)
{
	fixture *f = *state;
	static ctl_run r;
	json_object *o, *levels, *l;
	mb_client *c = client_with(f, "status-test", 4 * MIB, 2 * MIB, eProcessCritical);

	o = ctl_ok(f, &r, true, "status", NULL);
	assert_int_equal(json_u64(o, "budget"), BUDGET);
	assert_int_equal(json_u64(o, "committed"), 2 * MIB);
	assert_int_equal(json_u64(o, "sessions"), 1);
	assert_int_equal(json_u64(o, "waiters"), 0);
	assert_int_equal(json_u64(o, "pid"), (uint64_t)f->broker.pid);
	assert_int_equal(json_u64(o, "memory_load"), 1);
	assert_true(json_u64(o, "requests") >= 2);
	assert_int_equal(json_u64(o, "refusals"), 0);
	assert_int_equal(json_u64(o, "offences"), 0);
	assert_string_equal(json_str(o, "version"), "0.1.0");
	assert_true(json_object_object_get_ex(o, "levels", &levels));
	assert_int_equal(json_object_array_length(levels), 3);
	l = json_object_array_get_idx(levels, 0);
	assert_string_equal(json_str(l, "name"), "task");
	assert_int_equal(json_u64(l, "ceiling_permille"), 900);
	assert_int_equal(json_u64(l, "wait_ms"), 0);
	l = json_object_array_get_idx(levels, 2);
	assert_int_equal(json_u64(l, "ceiling"), BUDGET);
	assert_int_equal(json_u64(l, "wait_ms"), 2000);
	assert_int_equal(json_u64(l, "committed_by_max_level"), 2 * MIB);
	assert_int_equal(json_u64(l, "sessions_by_max_level"), 1);
	json_object_put(o);

	/* The human table. */
	ctl_ok(f, &r, false, "status", NULL);
	assert_non_null(strstr(r.out, "budget      256.0 MiB"));
	assert_non_null(strstr(r.out, "committed   2.0 MiB"));
	assert_non_null(strstr(r.out, "appdomain"));
	mb_disconnect(c);
}

/* ---- clients ---- */

static void test_clients(void **state)
{
	fixture *f = *state;
	static ctl_run r;
	json_object *o, *arr;
	mb_client *a = client_with(f, "alpha", 1 * MIB, 1 * MIB, eTaskCritical);
	mb_client *b = client_with(f, "beta \"quoted\"", 8 * MIB, 3 * MIB, eAppDomainCritical);
	bool seen_a = false, seen_b = false;

	o = ctl_ok(f, &r, true, "clients", NULL);
	assert_true(json_object_object_get_ex(o, "clients", &arr));
	assert_int_equal(json_object_array_length(arr), 2);
	for (size_t i = 0; i < json_object_array_length(arr); i++) {
		json_object *c = json_object_array_get_idx(arr, i);
		const char *name = json_str(c, "name");
		assert_int_equal(json_u64(c, "pid"), (uint64_t)getpid());
		assert_int_equal(json_u64(c, "uid"), (uint64_t)getuid());
		assert_int_equal(json_u64(c, "gid"), (uint64_t)getgid());
		assert_int_equal(json_u64(c, "reservations"), 1);
		assert_true(json_u64(c, "session_id") > 0);
		assert_int_equal(json_u64(c, "offences"), 0);
		assert_true(json_u64(c, "age_seconds") < 300);
		assert_string_equal(json_str(c, "group"), "");
		if (strcmp(name, "alpha") == 0) {
			seen_a = true;
			assert_int_equal(json_u64(c, "committed"), 1 * MIB);
			assert_int_equal(json_u64(c, "reserved"), 1 * MIB);
			assert_int_equal(json_u64(c, "max_level"), 0);
		} else if (strcmp(name, "beta \"quoted\"") == 0) {
			seen_b = true;
			assert_int_equal(json_u64(c, "committed"), 3 * MIB);
			assert_int_equal(json_u64(c, "reserved"), 8 * MIB);
			assert_int_equal(json_u64(c, "max_level"), 1);
		}
	}
	assert_true(seen_a && seen_b);
	json_object_put(o);

	ctl_ok(f, &r, false, "clients", NULL);
	assert_non_null(strstr(r.out, "alpha"));
	assert_non_null(strstr(r.out, "appdomain"));

	/* A client that goes away is gone from the list, once the broker has seen its connection
	 * close (that completes asynchronously: poll for it, within a generous limit). */
	mb_disconnect(b);
	size_t listed = 0;
	for (int tries = 0; tries < 1000; tries++) {
		o = ctl_ok(f, &r, true, "clients", NULL);
		assert_true(json_object_object_get_ex(o, "clients", &arr));
		listed = json_object_array_length(arr);
		json_object_put(o);
		if (listed == 1)
			break;
		usleep(10000);
	}
	assert_int_equal(listed, 1);
	mb_disconnect(a);
}

/* ---- metrics ---- */

/* Checks the exposition format line by line: every sample's metric has # HELP and # TYPE before
 * it, names and labels are well-formed, values are numbers. Returns the number of samples. */
static int check_exposition(char *text)
{
	char typed[64][96];
	int ntyped = 0, samples = 0;

	for (char *line = strtok(text, "\n"); line != NULL; line = strtok(NULL, "\n")) {
		char name[96];
		size_t n = 0;
		const char *p = line, *value;
		char *end;

		if (strncmp(line, "# HELP ", 7) == 0)
			continue;
		if (strncmp(line, "# TYPE ", 7) == 0) {
			char type[32];
			assert_int_equal(sscanf(line + 7, "%95s %31s", typed[ntyped], type), 2);
			assert_true(strcmp(type, "gauge") == 0 || strcmp(type, "counter") == 0);
			if (strcmp(type, "counter") == 0) {
				size_t l = strlen(typed[ntyped]);
				assert_true(l > 6 && strcmp(typed[ntyped] + l - 6, "_total") == 0);
			}
			assert_true(++ntyped < 64);
			continue;
		}
		assert_true(line[0] != '#');
		while (isalnum((unsigned char)*p) || *p == '_')
			name[n++] = *p++;
		name[n] = '\0';
		assert_true(n > 0 && n < sizeof(name));
		assert_int_equal(strncmp(name, "membroker_", 10), 0);
		if (*p == '{') {
			/* label="value" pairs, with \" and \\ escapes inside values */
			p++;
			while (*p != '}') {
				while (isalnum((unsigned char)*p) || *p == '_')
					p++;
				assert_int_equal(*p++, '=');
				assert_int_equal(*p++, '"');
				while (*p != '"') {
					assert_true(*p != '\0');
					if (*p == '\\')
						p++;
					p++;
				}
				p++;
				if (*p == ',')
					p++;
			}
			p++;
		}
		assert_int_equal(*p, ' ');
		value = p + 1;
		strtod(value, &end);
		assert_true(end != value && *end == '\0');
		/* The sample's family was typed just before (its TYPE line is the last one). */
		assert_true(ntyped > 0);
		assert_string_equal(name, typed[ntyped - 1]);
		samples++;
	}
	return samples;
}

static void test_metrics(void **state)
{
	fixture *f = *state;
	static ctl_run r;
	static char copy[sizeof(r.out)];
	char want[256];
	mb_client *c = client_with(f, "metered", 4 * MIB, 1 * MIB, eAppDomainCritical);

	ctl_ok(f, &r, false, "metrics", NULL);
	assert_non_null(strstr(r.out, "# HELP membroker_budget_bytes "));
	assert_non_null(strstr(r.out, "# TYPE membroker_budget_bytes gauge\n"));
	assert_non_null(strstr(r.out, "\nmembroker_budget_bytes 268435456\n"));
	assert_non_null(strstr(r.out, "\nmembroker_committed_bytes 1048576\n"));
	assert_non_null(strstr(r.out, "\nmembroker_clients 1\n"));
	assert_non_null(strstr(r.out, "\nmembroker_waiters 0\n"));
	assert_non_null(strstr(r.out, "# TYPE membroker_refusals_total counter\n"));
	assert_non_null(strstr(r.out, "\nmembroker_refusals_total 0\n"));
	assert_non_null(strstr(r.out, "\nmembroker_reclaimed_bytes_total 0\n"));
	assert_non_null(strstr(r.out, "\nmembroker_offences_total 0\n"));
	assert_non_null(strstr(r.out, "\nmembroker_requests_total "));
	assert_non_null(
	    strstr(r.out, "membroker_level_ceiling_bytes{level=\"process\"} 268435456\n"));
	snprintf(want, sizeof(want), "pid=\"%d\",uid=\"%u\",name=\"metered\"", (int)getpid(),
		 (unsigned)getuid());
	assert_non_null(strstr(r.out, want));
	assert_non_null(strstr(r.out, "membroker_client_committed_bytes{session="));
	snprintf(want, sizeof(want), "name=\"metered\",group=\"\"} 1048576\n");
	assert_non_null(strstr(r.out, want));
	memcpy(copy, r.out, r.len + 1);
	assert_true(check_exposition(copy) >= 20);

	/* A refusal shows in the counter. */
	{
		void *mem = NULL;
		assert_int_equal(mb_virtual_alloc(c, NULL, 512 * MIB, MEM_RESERVE | MEM_COMMIT,
						  PAGE_READWRITE, eTaskCritical, &mem),
				 E_OUTOFMEMORY);
	}
	ctl_ok(f, &r, false, "metrics", NULL);
	assert_non_null(strstr(r.out, "\nmembroker_refusals_total 1\n"));
	mb_disconnect(c);
}

/* ---- set-budget ---- */

static void test_set_budget(void **state)
{
	fixture *f = *state;
	static ctl_run r;
	mb_session_status st;
	json_object *o;
	mb_client *c = client_with(f, "budgeted", 8 * MIB, 4 * MIB, eTaskCritical);
	void *mem = NULL;

	ctl_ok(f, &r, false, "set-budget", "128M");
	assert_non_null(strstr(r.out, "134217728"));
	assert_int_equal(mb_get_session_status(c, &st), S_OK);
	assert_int_equal(st.budget, 128 * MIB);

	o = ctl_ok(f, &r, true, "set-budget", "1G");
	assert_int_equal(json_u64(o, "budget"), 1024 * MIB);
	json_object_put(o);
	assert_int_equal(mb_get_session_status(c, &st), S_OK);
	assert_int_equal(st.budget, 1024 * MIB);
	/* The new budget is in force for commits, not only reported. */
	assert_int_equal(mb_virtual_alloc(c, NULL, 512 * MIB, MEM_RESERVE | MEM_COMMIT,
					  PAGE_READWRITE, eTaskCritical, &mem),
			 S_OK);
	assert_int_equal(mb_virtual_free(c, mem, 0, MEM_RELEASE), S_OK);

	o = ctl_ok(f, &r, true, "status", NULL);
	assert_int_equal(json_u64(o, "budget"), 1024 * MIB);
	json_object_put(o);

	/* Below what is committed: refused by the broker, nothing changes. */
	{
		const char *args[] = {"--address", f->broker.address, "set-budget", "2M", NULL};
		run_ctl(&r, args);
		expect_code(&r, 1);
		assert_non_null(strstr(r.err, "committed"));
	}
	assert_int_equal(mb_get_session_status(c, &st), S_OK);
	assert_int_equal(st.budget, 1024 * MIB);

	/* Not a size: a usage error, the broker is not asked. */
	{
		const char *bad[][5] = {
		    {"--address", f->broker.address, "set-budget", "lots", NULL},
		    {"--address", f->broker.address, "set-budget", "50%", NULL},
		    {"--address", f->broker.address, "set-budget", "512", NULL},
		    {"--address", f->broker.address, "set-budget", NULL, NULL},
		    {"--address", f->broker.address, "set-budget", "1G", "2G"},
		};
		for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
			const char *args[6];
			memcpy(args, bad[i], sizeof(bad[i]));
			args[5] = NULL;
			run_ctl(&r, args);
			expect_code(&r, 2);
		}
	}
	mb_disconnect(c);
}

/* ---- reload ---- */

static bool broker_alive(const mb_test_broker *b)
{
	return b->pid > 0 && waitpid(b->pid, NULL, WNOHANG) == 0;
}

typedef struct limit_wait {
	const fixture *f;
	uint64_t want;
} limit_wait;

static bool client_max_is(void *arg)
{
	limit_wait *w = arg;
	static ctl_run r;
	json_object *o = ctl_ok(w->f, &r, true, "status", NULL);
	bool ok = json_u64(o, "client_max") == w->want;
	json_object_put(o);
	return ok;
}

static void test_reload(void **state)
{
	fixture *f = *state;
	static ctl_run r;
	mb_client *c = client_with(f, "limited", 16 * MIB, 2 * MIB, eTaskCritical);
	limit_wait w = {f, 64 * MIB};
	void *mem = NULL;
	json_object *o;

	assert_true(client_max_is(&w));
	/* Lower the limit under what the client wants next, and reload through membrokerctl. */
	write_file(f->config, "[limits]\nclient_max = 4M\n");
	o = ctl_ok(f, &r, true, "reload", NULL);
	json_object_put(o);
	w.want = 4 * MIB;
	assert_true(mb_test_wait_for(client_max_is, &w, 10000));
	assert_true(broker_alive(&f->broker));
	assert_int_equal(mb_virtual_alloc(c, NULL, 4 * MIB, MEM_RESERVE | MEM_COMMIT,
					  PAGE_READWRITE, eTaskCritical, &mem),
			 E_OUTOFMEMORY);

	/* An invalid file is refused by the broker, which keeps the running configuration. */
	write_file(f->config, "[limits]\nclient_max = plenty\n");
	ctl_ok(f, &r, false, "reload", NULL);
	usleep(300 * 1000);
	assert_true(broker_alive(&f->broker));
	assert_true(client_max_is(&w));

	/* And raising it again lets the commit through. */
	write_file(f->config, "[limits]\nclient_max = 64M\n");
	ctl_ok(f, &r, false, "reload", NULL);
	w.want = 64 * MIB;
	assert_true(mb_test_wait_for(client_max_is, &w, 10000));
	assert_int_equal(mb_virtual_alloc(c, NULL, 4 * MIB, MEM_RESERVE | MEM_COMMIT,
					  PAGE_READWRITE, eTaskCritical, &mem),
			 S_OK);
	assert_true(broker_alive(&f->broker));
	mb_disconnect(c);
}

/* ---- access control ---- */

static void test_unprivileged_refused(void **state)
{
	fixture *f = *state;
	static ctl_run r;
	const ctl_creds nobody = {NOBODY, NOBODY};
	const char *args[] = {"--address", f->broker.address, "status", NULL};
	char path[300];
	mb_client *c;
	mb_session_status st;

	if (geteuid() != 0)
		skip(); /* switching to another uid needs root */
	c = client_with(f, "bystander", 1 * MIB, 1 * MIB, eTaskCritical);
	/* The socket's directory and mode keep nobody out already. */
	run_ctl_as(&r, &nobody, args);
	expect_code(&r, 4);
	assert_non_null(strstr(r.err, "access denied"));

	/* Opened up on the filesystem, the broker itself refuses every request (SO_PEERCRED). */
	assert_int_equal(chmod(f->broker.dir, 0711), 0);
	snprintf(path, sizeof(path), "%s/mb.sock.admin", f->broker.dir);
	assert_int_equal(chmod(path, 0666), 0);
	for (int i = 0; i < 3; i++) {
		const char *cmds[] = {"status", "set-budget", "reload"};
		const char *a[] = {"--address", f->broker.address, cmds[i], "1G", NULL};
		if (i != 1)
			a[3] = NULL;
		run_ctl_as(&r, &nobody, a);
		expect_code(&r, 4);
		assert_non_null(strstr(r.err, "access denied: membrokerctl needs root or the admin "
					      "group"));
	}
	/* Nothing changed, and root still gets in. */
	assert_int_equal(mb_get_session_status(c, &st), S_OK);
	assert_int_equal(st.budget, BUDGET);
	assert_true(broker_alive(&f->broker));
	ctl_ok(f, &r, false, "status", NULL);
	mb_disconnect(c);
}

/* ---- broker down ---- */

static void test_broker_down(void **state)
{
	fixture *f = *state;
	static ctl_run r;
	const char *args[] = {"--address", f->broker.address, "status", NULL};
	char want[300];

	/* Killed: its socket files stay behind (connection refused). */
	mb_test_broker_kill(&f->broker);
	run_ctl(&r, args);
	expect_code(&r, 3);
	snprintf(want, sizeof(want), "membrokerd is not running at %s.admin", f->broker.address);
	assert_non_null(strstr(r.err, want));

	/* Never there: no socket file at all. */
	{
		const char *none[] = {"--address", "ipc:///nonexistent/membroker.sock", "metrics",
				      NULL};
		run_ctl(&r, none);
		expect_code(&r, 3);
		assert_non_null(strstr(r.err, "membrokerd is not running at "
					      "ipc:///nonexistent/membroker.sock.admin"));
	}
	/* An abstract name nobody serves. */
	{
		const char *none[] = {"--address", "abstract://membroker-test-nobody-here",
				      "status", NULL};
		run_ctl(&r, none);
		expect_code(&r, 3);
	}
}

/* ---- usage ---- */

static void test_usage(void **state)
{
	fixture *f = *state;
	static ctl_run r;
	const char *none[] = {NULL};
	const char *help[] = {"--help", NULL};
	const char *version[] = {"--version", NULL};
	const char *unknown[] = {"--address", f->broker.address, "frobnicate", NULL};
	const char *extra[] = {"--address", f->broker.address, "status", "now", NULL};
	const char *badopt[] = {"--bogus", "status", NULL};
	const char *badaddr[] = {"--address", "tcp://127.0.0.1:1", "status", NULL};

	run_ctl(&r, none);
	expect_code(&r, 2);
	run_ctl(&r, help);
	expect_code(&r, 0);
	assert_non_null(strstr(r.out, "set-budget"));
	run_ctl(&r, version);
	expect_code(&r, 0);
	assert_non_null(strstr(r.out, "membrokerctl 0.1.0"));
	run_ctl(&r, unknown);
	expect_code(&r, 2);
	run_ctl(&r, extra);
	expect_code(&r, 2);
	run_ctl(&r, badopt);
	expect_code(&r, 2);
	run_ctl(&r, badaddr);
	expect_code(&r, 2);
}

/* $MEMBROKER_ADDRESS is honoured when --address is not given. */
static void test_env_address(void **state)
{
	fixture *f = *state;
	static ctl_run r;
	const char *args[] = {"status", NULL};

	run_ctl_env(&r, NULL, f->broker.address, args);
	expect_code(&r, 0);
	assert_non_null(strstr(r.out, "budget      256.0 MiB"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_status, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_clients, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_metrics, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_set_budget, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_reload, setup_config, teardown_config),
	    cmocka_unit_test_setup_teardown(test_unprivileged_refused, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_broker_down, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_usage, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_env_address, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
