/* hello_counter: the README demo. Prints an incrementing counter once per
 * second; after a checkpoint and a restart it continues where it was. */
#include <stdio.h>
#include <unistd.h>

int main(void)
{
	for (unsigned long n = 1;; n++) {
		printf("hello_counter: %lu\n", n);
		fflush(stdout);
		sleep(1);
	}
}
