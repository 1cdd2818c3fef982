"""What the tests share, and the benchmark (`bench/`) with them. No fixtures here: the conftest.py files
register those, from these pieces.

    s3server.py       a moto S3 server in a child process (s3server_main.py: moto with two fixes)
    processes.py      pids and mount points: alive, stop, mounted, unmount whatever it takes
    cli.py            the `artfs` command of this checkout in a subprocess; `artfs seal --json`
    mounts.py         `artfs mount --daemon` started and stopped; the mounts of one test
    repos.py          a repo as a "machine" (its own cache over a store); committing from one
    trees.py          writing trees, the mount tests' dataset, and `snapshot`, the one tree comparison
    faults.py         FaultyStore: a store wrapper that counts, slows down and fails calls
    staging_model.py  the reference model of staging, for the core and the mount model tests
    syscalls.py       renameat2 and errno_of, for the staging tests
"""
