# needs: git
# Commits 600 files in four rounds, removes a folder, logs, collects garbage and checks the
# repository. Fixed names and dates make the commit ids, and so the output, reproducible.
set -e
export HOME="$1" GIT_CONFIG_NOSYSTEM=1 GIT_CONFIG_GLOBAL=/dev/null
export GIT_AUTHOR_NAME=t GIT_AUTHOR_EMAIL=t@example.com GIT_COMMITTER_NAME=t GIT_COMMITTER_EMAIL=t@example.com
export GIT_AUTHOR_DATE=2026-01-01T00:00:00Z GIT_COMMITTER_DATE=2026-01-01T00:00:00Z
cd "$1"
git init -q -b main repo && cd repo
for round in 1 2 3 4; do
    i=0
    while [ $i -lt 150 ]; do
        mkdir -p "d$((i % 10))"
        printf 'file %s round %s\n%0200d\n' $i $round $((i * round)) > "d$((i % 10))/f$i.txt"
        i=$((i + 1))
    done
    git add -A
    git commit -q -m "round $round"
done
git rm -q -r d3
git commit -q -m "drop d3"
git log --stat --format='%H %s' | head -40
git gc -q --aggressive
git fsck --no-progress --full
git count-objects -v | grep -E '^(count|in-pack|packs):'
git log --format='%H' | wc -l
