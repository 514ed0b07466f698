# needs: python3
# A Python script: dicts, JSON, regexes, hashing, and child processes started both ways
# Python starts them (script.py).
set -e
python3 "$2/script.py"
