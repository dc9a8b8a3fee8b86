/* ids: prints "euid E egid G" and exits 0 (run from a setuid copy). */
#include <stdio.h>
#include <unistd.h>

int main(void)
{
	printf("euid %u egid %u\n", (unsigned)geteuid(), (unsigned)getegid());
	return 0;
}
