/*
 * mpi-hello: the testbed's MPI test program.
 *
 *   mpi-hello [--write DIR] [--fail-rank R] [--exit-code C] [--sleep S] [--ring] [--stamp]
 *
 * Every rank prints "rank R of N on HOST uid U gid G". With --ring a token passes
 * through every rank (proves point-to-point works between all nodes). With --write,
 * each rank writes DIR/rank-R.txt. Rank --fail-rank exits with --exit-code. --sleep
 * keeps every rank alive S seconds (for fault injection). --stamp prints
 * "rank R init T", T the wall-clock time (epoch seconds) MPI_Init returned at.
 */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    int rank, size, fail_rank = -1, exit_code = 3, ring = 0, stamp = 0;
    struct timespec inited;
    double sleep_s = 0.0;
    const char *dir = NULL;
    char host[256];

    MPI_Init(&argc, &argv);
    clock_gettime(CLOCK_REALTIME, &inited);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--write") && i + 1 < argc) dir = argv[++i];
        else if (!strcmp(argv[i], "--fail-rank") && i + 1 < argc) fail_rank = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--exit-code") && i + 1 < argc) exit_code = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--sleep") && i + 1 < argc) sleep_s = atof(argv[++i]);
        else if (!strcmp(argv[i], "--ring")) ring = 1;
        else if (!strcmp(argv[i], "--stamp")) stamp = 1;
    }
    gethostname(host, sizeof host);
    printf("rank %d of %d on %s uid %d gid %d\n", rank, size, host, (int)getuid(), (int)getgid());
    if (stamp)
        printf("rank %d init %ld.%06ld\n", rank, (long)inited.tv_sec, inited.tv_nsec / 1000);
    fflush(stdout);

    if (ring && size > 1) {
        int token = 0;
        if (rank == 0) {
            MPI_Send(&token, 1, MPI_INT, 1, 0, MPI_COMM_WORLD);
            MPI_Recv(&token, 1, MPI_INT, size - 1, 0, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
            printf("ring passed %d ranks\n", token + 1);
            fflush(stdout);
        } else {
            MPI_Recv(&token, 1, MPI_INT, rank - 1, 0, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
            token++;
            MPI_Send(&token, 1, MPI_INT, (rank + 1) % size, 0, MPI_COMM_WORLD);
        }
    }
    if (dir) {
        char path[4096];
        snprintf(path, sizeof path, "%s/rank-%d.txt", dir, rank);
        FILE *f = fopen(path, "w");
        if (!f || fprintf(f, "%d %s\n", rank, host) < 0 || fclose(f)) {
            perror(path);
            MPI_Abort(MPI_COMM_WORLD, 4);
        }
    }
    if (sleep_s > 0) usleep((useconds_t)(sleep_s * 1e6));
    if (rank == fail_rank) {
        fprintf(stderr, "rank %d failing with exit code %d as asked\n", rank, exit_code);
        fflush(stderr);
        exit(exit_code);
    }
    MPI_Barrier(MPI_COMM_WORLD);
    MPI_Finalize();
    return 0;
}
