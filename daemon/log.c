/*
 * log.c: stderr logging with journal priority prefixes.
 */
#include "log.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <systemd/sd-journal.h>

static int max_priority = LOG_INFO;
static int journal_prefix = -1;

void mb_log_set_level(int priority)
{
	max_priority = priority;
}

int mb_log_parse_level(const char *name)
{
	static const struct {
		const char *name;
		int prio;
	} levels[] = {{"debug", LOG_DEBUG},
		      {"info", LOG_INFO},
		      {"notice", LOG_NOTICE},
		      {"warning", LOG_WARNING},
		      {"error", LOG_ERR}};
	for (unsigned i = 0; i < sizeof(levels) / sizeof(levels[0]); i++)
		if (name != NULL && strcmp(name, levels[i].name) == 0)
			return levels[i].prio;
	return -1;
}

void mb_log(int priority, const char *fmt, ...)
{
	static const char *const names[] = {"emergency", "alert",  "critical", "error",
					    "warning",	 "notice", "info",     "debug"};
	char line[1024];
	va_list ap;

	if (priority > max_priority)
		return;
	/* journald sets JOURNAL_STREAM for the stderr it captures; only then is "<N>" understood.
	 */
	if (journal_prefix < 0)
		journal_prefix = getenv("JOURNAL_STREAM") != NULL;
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	if (journal_prefix)
		fprintf(stderr, "<%d>%s\n", priority, line);
	else
		fprintf(stderr, "membrokerd: %s: %s\n", names[priority & 7], line);
}

int mb_log_allow(mb_log_limit *l, unsigned long long *suppressed)
{
	static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
	struct timespec ts;
	int ok;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	pthread_mutex_lock(&lock);
	if (ts.tv_sec != l->window) {
		l->window = ts.tv_sec;
		l->written = 0;
	}
	ok = l->written < MB_LOG_BURST;
	if (ok) {
		l->written++;
		*suppressed = l->suppressed;
		l->suppressed = 0;
	} else {
		l->suppressed++;
	}
	pthread_mutex_unlock(&lock);
	return ok;
}

void mb_log_limited(mb_log_limit *l, int priority, const char *fmt, ...)
{
	unsigned long long suppressed;
	char line[900];
	va_list ap;

	if (priority > max_priority || !mb_log_allow(l, &suppressed))
		return;
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	if (suppressed > 0)
		mb_log(priority, "%s (%llu like it not logged)", line, suppressed);
	else
		mb_log(priority, "%s", line);
}

void mb_log_event(int priority, const char *message_id, int pid, unsigned uid, int level,
		  unsigned long long bytes, unsigned hresult, const char *fmt, ...)
{
	static mb_log_limit events = MB_LOG_LIMIT_INIT;
	unsigned long long suppressed;
	char msg[512];
	va_list ap;

	if (priority > max_priority || !mb_log_allow(&events, &suppressed))
		return;
	va_start(ap, fmt);
	int n = vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (suppressed > 0 && n >= 0 && (size_t)n < sizeof(msg))
		snprintf(msg + n, sizeof(msg) - (size_t)n,
			 " (%llu events not logged before this one)", suppressed);
	if (journal_prefix < 0)
		journal_prefix = getenv("JOURNAL_STREAM") != NULL;
	if (journal_prefix &&
	    sd_journal_send("MESSAGE=%s", msg, "PRIORITY=%d", priority, "MESSAGE_ID=%s", message_id,
			    "MEMBROKER_CLIENT_PID=%d", pid, "MEMBROKER_CLIENT_UID=%u", uid,
			    "MEMBROKER_LEVEL=%d", level, "MEMBROKER_BYTES=%llu", bytes,
			    "MEMBROKER_HRESULT=0x%08X", hresult, "SYSLOG_IDENTIFIER=membrokerd",
			    NULL) >= 0)
		return;
	mb_log(priority, "%s [pid=%d uid=%u level=%d bytes=%llu hresult=0x%08X]", msg, pid, uid,
	       level, bytes, hresult);
}
