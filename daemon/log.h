/*
 * log.h: the broker's log. Plain lines on stderr ("membrokerd: warning: ..."), with a syslog
 * priority prefix ("<4>") when stderr is the journal, so journald keeps the levels.
 */
#ifndef MB_LOG_H
#define MB_LOG_H

#include <syslog.h>

/* Messages above this priority (LOG_DEBUG > LOG_INFO > ...) are dropped. Default LOG_INFO. */
void mb_log_set_level(int priority);

/* Parses "debug", "info", "notice", "warning", "error". Returns the priority or -1. */
int mb_log_parse_level(const char *name);

void mb_log(int priority, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
