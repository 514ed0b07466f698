# needs: sqlite3
# Builds, updates, queries and checks a database (script.sql) in the work directory.
# Arguments of every program script: work directory (fresh), sources directory, build directory.
set -e
sqlite3 "$1/books.db" < "$2/script.sql"
