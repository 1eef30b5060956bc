/*
 * lsan_nng.h: included by the test programs that drop nng connections on purpose (raw garbage,
 * pipes closed under a client). nng 1.5.2 can leak the objects of a pipe dropped mid-exchange (a
 * cycle of its own pipe, dialer and aio structures, seen about once in twenty sanitized runs).
 * LeakSanitizer reads this suppression in those programs only; brokers started by the harness
 * get tests/lsan-nng.supp. Include it in one file per program.
 */
#ifndef MB_TEST_LSAN_NNG_H
#define MB_TEST_LSAN_NNG_H

__attribute__((used)) const char *__lsan_default_suppressions(void);
__attribute__((used)) const char *__lsan_default_suppressions(void)
{
	return "leak:libnng.so.1\n";
}

#endif
