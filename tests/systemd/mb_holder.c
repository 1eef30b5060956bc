/*
 * mb_holder.c: the client `make test-systemd` runs inside the booted system
 * (scripts/test-systemd.sh).
 *
 *   mb_holder hold MIB DIR   commits MIB MiB at eProcessCritical, fills it with a pattern, writes
 *                            DIR/held, waits for DIR/go (the broker is restarted meanwhile), then
 *                            checks that the memory is intact and that the broker's books count
 *                            it again; writes "ok ..." with its books before and after ("books
 *                            committed A credit C total T before committed A' credit C' total
 *                            T'") or "fail: ..." to DIR/result, and stays connected until
 *                            DIR/done appears (so membrokerctl can list it).
 *   mb_holder refuse         asks for twice the budget at eTaskCritical: the broker must refuse
 *                            with E_OUTOFMEMORY (which it logs with its journal fields).
 *
 * Both use the default address (no argument, no environment): the rule a client of any user has.
 */
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <membroker.h>

static void sleep_ms(long ms)
{
	struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
	nanosleep(&ts, NULL);
}

static void write_file(const char *dir, const char *name, const char *fmt, ...)
{
	char path[512];
	va_list ap;
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	f = fopen(path, "w");
	if (f == NULL)
		return;
	va_start(ap, fmt);
	vfprintf(f, fmt, ap);
	va_end(ap);
	fclose(f);
}

static int fail(const char *dir, const char *what, HRESULT hr)
{
	write_file(dir, "result", "fail: %s: %s (%s)\n", what, mb_hresult_name(hr),
		   mb_last_error());
	fprintf(stderr, "mb_holder: %s: %s (%s)\n", what, mb_hresult_name(hr), mb_last_error());
	return 1;
}

static unsigned char pattern(size_t i)
{
	return (unsigned char)(i * 131u + 7u);
}

static int hold(size_t mib, const char *dir)
{
	const size_t size = mib << 20;
	mb_session_status st, before, after;
	mb_client_stats cs;
	mb_client *c;
	unsigned char *p;
	void *more;
	char go[512];
	struct stat sb;
	HRESULT hr;

	if ((hr = mb_connect_named(NULL, "mb_holder", &c)) != S_OK)
		return fail(dir, "connect", hr);
	hr = mb_virtual_alloc(c, NULL, size + (4u << 20), MEM_RESERVE, PAGE_READWRITE,
			      eProcessCritical, (void **)&p);
	if (hr != S_OK)
		return fail(dir, "reserve", hr);
	if ((hr = mb_virtual_alloc(c, p, size, MEM_COMMIT, PAGE_READWRITE, eProcessCritical,
				   &more)) != S_OK)
		return fail(dir, "commit", hr);
	for (size_t i = 0; i < size; i++)
		p[i] = pattern(i);
	if ((hr = mb_get_session_status(c, &st)) != S_OK)
		return fail(dir, "status before", hr);
	before = st;
	write_file(dir, "held", "pid %d committed %llu\n", (int)getpid(),
		   (unsigned long long)st.committed);

	/* The broker is restarted while we wait. */
	snprintf(go, sizeof(go), "%s/go", dir);
	for (int waited = 0; stat(go, &sb) != 0; waited += 100) {
		if (waited > 300000)
			return fail(dir, "no go within 300 s", E_FAIL);
		sleep_ms(100);
	}
	for (size_t i = 0; i < size; i++)
		if (p[i] != pattern(i)) {
			write_file(dir, "result", "fail: byte %zu changed across the restart\n", i);
			return 1;
		}
	/* The first call after the restart reconnects and hands the memory back; allow 30 s. */
	for (int tries = 0; (hr = mb_get_session_status(c, &st)) != S_OK; tries++) {
		if (tries > 300)
			return fail(dir, "status after the restart", hr);
		sleep_ms(100);
	}
	after = st;
	if (st.committed < size) {
		write_file(
		    dir, "result",
		    "fail: the broker counts %llu bytes committed for this client, not %zu\n",
		    (unsigned long long)st.committed, size);
		return 1;
	}
	if ((hr = mb_virtual_alloc(c, p + size, 1u << 20, MEM_COMMIT, PAGE_READWRITE,
				   eProcessCritical, &more)) != S_OK)
		return fail(dir, "commit after the restart", hr);
	memset(more, 0xee, 1u << 20);
	for (size_t i = 0; i < size; i++)
		if (p[i] != pattern(i)) {
			write_file(dir, "result", "fail: byte %zu changed after reconnecting\n", i);
			return 1;
		}
	if (mb_get_client_stats(c, &cs) != S_OK)
		cs.reconnects = 0;
	/* The books as the client saw them just before and just after the restart (before the new
	 * commit): the same with systemd's descriptor store after a clean stop. */
	write_file(dir, "result",
		   "ok: %zu MiB intact, %llu reconnection(s), a new commit served; books committed "
		   "%llu credit %llu total %llu before committed %llu credit %llu total %llu\n",
		   mib, (unsigned long long)cs.reconnects, (unsigned long long)after.committed,
		   (unsigned long long)after.credit,
		   (unsigned long long)(after.total_committed + after.total_credit),
		   (unsigned long long)before.committed, (unsigned long long)before.credit,
		   (unsigned long long)(before.total_committed + before.total_credit));
	snprintf(go, sizeof(go), "%s/done", dir);
	for (int waited = 0; stat(go, &sb) != 0 && waited < 60000; waited += 100)
		sleep_ms(100);
	mb_disconnect(c);
	return 0;
}

static int refuse(void)
{
	mb_session_status st;
	mb_client *c;
	void *p;
	HRESULT hr;

	if ((hr = mb_connect_named(NULL, "mb_holder", &c)) != S_OK ||
	    (hr = mb_get_session_status(c, &st)) != S_OK) {
		fprintf(stderr, "mb_holder: %s (%s)\n", mb_hresult_name(hr), mb_last_error());
		return 2;
	}
	hr = mb_virtual_alloc(c, NULL, (SIZE_T)(st.budget * 2), MEM_RESERVE | MEM_COMMIT,
			      PAGE_READWRITE, eTaskCritical, &p);
	printf("pid %d: commit of %llu bytes: %s\n", (int)getpid(),
	       (unsigned long long)(st.budget * 2), mb_hresult_name(hr));
	mb_disconnect(c);
	return hr == E_OUTOFMEMORY ? 0 : 1;
}

int main(int argc, char **argv)
{
	if (argc == 4 && strcmp(argv[1], "hold") == 0)
		return hold((size_t)strtoul(argv[2], NULL, 10), argv[3]);
	if (argc == 2 && strcmp(argv[1], "refuse") == 0)
		return refuse();
	fprintf(stderr, "usage: mb_holder hold MIB DIR | mb_holder refuse\n");
	return 2;
}
