"""Running a hall: doctor, backup and restore, install and upgrade (over server and gateway)."""
