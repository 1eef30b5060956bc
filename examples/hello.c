/*
 * hello.c: a small membroker client. Connects, reserves and commits memory through the broker,
 * uses it, shows what the broker and VirtualQuery report, and gives everything back.
 *
 * Usage: mb_hello [ADDRESS]   (default: $MEMBROKER_ADDRESS, else the default address)
 */
#include <stdio.h>
#include <string.h>

#include <membroker.h>

static int check(const char *what, HRESULT hr)
{
	printf("  %-34s %s (0x%08X)%s%s\n", what, mb_hresult_name(hr), (unsigned)hr,
	       hr == S_OK ? "" : ": ", hr == S_OK ? "" : mb_last_error());
	return hr == S_OK;
}

static void show_status(mb_client *c)
{
	mb_session_status st;
	if (check("session status", mb_get_session_status(c, &st)))
		printf("    budget %llu MiB, all clients %llu KiB committed, this client %llu KiB "
		       "committed in %llu reservation(s), %u client(s) connected\n",
		       (unsigned long long)(st.budget >> 20),
		       (unsigned long long)(st.total_committed >> 10),
		       (unsigned long long)(st.committed >> 10),
		       (unsigned long long)st.reservations, st.sessions);
	printf("    commit credit %llu KiB unused; %llu commit(s) and %llu decommit(s) made "
	       "without a round trip\n",
	       (unsigned long long)(st.credit >> 10), (unsigned long long)st.local_commits,
	       (unsigned long long)st.local_decommits);
}

int main(int argc, char **argv)
{
	const size_t size = 1 << 20;
	mb_client *c;
	void *p = NULL, *q = NULL;
	MEMORY_BASIC_INFORMATION mbi;
	SIZE_T written, avail;
	DWORD load, old;

	printf("mb_hello: connecting to %s\n", argc > 1 ? argv[1] : "the default broker");
	if (!check("mb_connect", mb_connect_named(argc > 1 ? argv[1] : NULL, "mb_hello", &c)))
		return 1;
	show_status(c);

	if (!check("reserve 1 MiB",
		   mb_virtual_alloc(c, NULL, size, MEM_RESERVE, PAGE_READWRITE, eTaskCritical, &p)))
		return 1;
	printf("    reserved at %p\n", p);
	check("commit 256 KiB (eTaskCritical)",
	      mb_virtual_alloc(c, p, size / 4, MEM_COMMIT, PAGE_READWRITE, eTaskCritical, &q));
	memset(q, 0x5a, size / 4);
	printf("    wrote 256 KiB at native speed; byte[1000] = 0x%02x\n",
	       ((unsigned char *)q)[1000]);
	if (check("VirtualQuery", mb_virtual_query(c, p, &mbi, sizeof(mbi), &written)))
		printf("    base %p size %zu state 0x%x protect 0x%x type 0x%x\n", mbi.BaseAddress,
		       (size_t)mbi.RegionSize, (unsigned)mbi.State, (unsigned)mbi.Protect,
		       (unsigned)mbi.Type);
	/* The first commit asked the broker, which granted commit credit with it: these do not. */
	for (int i = 1; i < 4; i++) {
		void *r;
		char what[64];
		snprintf(what, sizeof(what), "commit 64 KiB from credit #%d", i);
		check(what, mb_virtual_alloc(c, (char *)p + size / 4 + (size_t)(i - 1) * 65536,
					     65536, MEM_COMMIT, PAGE_READWRITE, eTaskCritical, &r));
	}
	check("VirtualProtect to PAGE_READONLY",
	      mb_virtual_protect(c, q, size / 4, PAGE_READONLY, &old));
	if (check("GetMemoryLoad", mb_get_memory_load(c, &load, &avail)))
		printf("    memory load %u%%, this client could commit %zu MiB more\n",
		       (unsigned)load, (size_t)avail >> 20);
	show_status(c);
	check("decommit", mb_virtual_free(c, q, size / 4, MEM_DECOMMIT));
	check("decommit 64 KiB (from credit)",
	      mb_virtual_free(c, (char *)p + size / 4, 65536, MEM_DECOMMIT));
	check("release", mb_virtual_free(c, p, 0, MEM_RELEASE));
	check("free memory it never allocated", mb_virtual_free(c, &load, 0, MEM_RELEASE));
	show_status(c);
	mb_disconnect(c);
	printf("mb_hello: done\n");
	return 0;
}
