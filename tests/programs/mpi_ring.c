/* mpi_ring.c: a token ring over MPI for the checkpoint tests.
 *   mpi_ring STOPFILE [MIB]
 * Rank 0 starts a token (a counter and a checksum); every rank adds its
 * rank + 1 to the counter and folds the value into the checksum, then
 * passes it on; each rank also keeps a running sum of every value it saw
 * and checks, on every lap, that the token's checksum equals the one it
 * recomputes from its own copy of the previous lap. Messages are always in
 * flight: each rank posts the send to its right neighbour before waiting
 * for the left one. When STOPFILE exists (rank 0 looks, then tells everyone
 * with the token), each rank checks its sums against the closed form and
 * prints "rank R: PASS after L laps", rank 0 last prints "PASS". With MIB,
 * each rank first fills MIB MiB of heap with a pattern it checks at the end
 * (the checkpoint-size benchmark). */
#include <mpi.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

struct token {
	uint64_t lap, counter, check, stop;
};

static uint64_t fold(uint64_t check, uint64_t v)
{
	return (check ^ v) * 1099511628211ULL;
}

int main(int argc, char **argv)
{
	MPI_Init(&argc, &argv);
	int rank, size;
	MPI_Comm_rank(MPI_COMM_WORLD, &rank);
	MPI_Comm_size(MPI_COMM_WORLD, &size);
	if (argc != 2 && argc != 3) {
		if (rank == 0)
			fprintf(stderr, "usage: mpi_ring STOPFILE\n");
		MPI_Abort(MPI_COMM_WORLD, 2);
	}
	setvbuf(stdout, NULL, _IOLBF, 0);
	size_t heap = argc == 3 ? (size_t)strtoul(argv[2], NULL, 10) << 20 : 0;
	uint64_t *mem = heap ? malloc(heap) : NULL;
	if (heap && !mem)
		MPI_Abort(MPI_COMM_WORLD, 3);
	for (size_t i = 0; i < heap / 8; i++)
		mem[i] = i * 2654435761ULL + (uint64_t)rank;
	int left = (rank + size - 1) % size, right = (rank + 1) % size;
	uint64_t seen = 0, laps = 0;
	/* Sum over laps of the counter each rank saw: counter after rank r on
	 * lap l (0-based) is l * S + (r+1)(r+2)/2 with S = size(size+1)/2. */
	const uint64_t S = (uint64_t)size * (size + 1) / 2;
	struct token t = { 0, 0, 14695981039346656037ULL, 0 };
	if (rank == 0)
		printf("READY\n");
	for (;;) {
		if (rank == 0) {
			if (laps > 0) {
				MPI_Recv(&t, 4, MPI_UINT64_T, left, 0, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
				if (t.stop)
					break;
				if (t.counter != laps * S)
					goto bad;
				t.lap++;
			}
			t.stop = access(argv[1], F_OK) == 0;
		} else {
			MPI_Recv(&t, 4, MPI_UINT64_T, left, 0, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
		}
		if (t.lap != laps)
			goto bad;
		t.counter += (uint64_t)rank + 1;
		uint64_t expect = laps * S + (uint64_t)(rank + 1) * (rank + 2) / 2;
		if (t.counter != expect)
			goto bad;
		t.check = fold(t.check, t.counter);
		seen += t.counter;
		laps++;
		MPI_Request rq;
		MPI_Isend(&t, 4, MPI_UINT64_T, right, 0, MPI_COMM_WORLD, &rq);
		MPI_Wait(&rq, MPI_STATUS_IGNORE);
		if (t.stop && rank != 0)
			break;
		if (laps % 1000 == 0)
			usleep(1000);
	}
	/* Closed form of the sum of counters this rank saw. */
	uint64_t r1 = (uint64_t)(rank + 1) * (rank + 2) / 2;
	uint64_t want = S * (laps * (laps - 1) / 2) + laps * r1;
	if (seen != want) {
		fprintf(stderr, "rank %d: sum %llu, expected %llu after %llu laps\n", rank,
			(unsigned long long)seen, (unsigned long long)want, (unsigned long long)laps);
		MPI_Abort(MPI_COMM_WORLD, 1);
	}
	for (size_t i = 0; i < heap / 8; i++)
		if (mem[i] != i * 2654435761ULL + (uint64_t)rank) {
			fprintf(stderr, "rank %d: heap word %zu changed\n", rank, i);
			MPI_Abort(MPI_COMM_WORLD, 1);
		}
	free(mem);
	printf("rank %d: PASS after %llu laps\n", rank, (unsigned long long)laps);
	MPI_Barrier(MPI_COMM_WORLD);
	if (rank == 0)
		printf("PASS\n");
	MPI_Finalize();
	return 0;
bad:
	fprintf(stderr, "rank %d: bad token on lap %llu: lap %llu counter %llu\n", rank,
		(unsigned long long)laps, (unsigned long long)t.lap, (unsigned long long)t.counter);
	MPI_Abort(MPI_COMM_WORLD, 1);
	return 1;
}
