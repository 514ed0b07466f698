-- Tables with indexes, inserts, updates, deletes, joins, aggregates and integrity checks.
PRAGMA page_size = 4096;
CREATE TABLE author(id INTEGER PRIMARY KEY, name TEXT NOT NULL, country TEXT);
CREATE TABLE book(id INTEGER PRIMARY KEY, author INTEGER REFERENCES author(id), title TEXT,
                  year INTEGER, pages INTEGER, body BLOB);
CREATE INDEX book_author ON book(author);
CREATE INDEX book_year_title ON book(year, title);
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 2000)
INSERT INTO author SELECT i, 'author ' || i, CASE i % 7 WHEN 0 THEN 'NO' WHEN 1 THEN 'SE'
    WHEN 2 THEN 'FI' WHEN 3 THEN 'DK' ELSE 'IS' END FROM n;
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 60000)
INSERT INTO book SELECT i, 1 + (i * 7919) % 2000, printf('title %08d %s', (i * 104729) % 1000003,
    substr('abcdefghijklmnopqrstuvwxyz', 1 + i % 26)), 1900 + i % 120, 50 + (i * 31) % 900,
    zeroblob(i % 3000) FROM n;
UPDATE book SET pages = pages * 2, title = upper(title) WHERE year % 5 = 0;
DELETE FROM book WHERE id % 13 = 0;
UPDATE author SET name = name || ' (' || country || ')' WHERE id IN
    (SELECT author FROM book GROUP BY author HAVING count(*) > 25);
CREATE TABLE summary AS SELECT a.country, count(*) AS books, sum(b.pages) AS pages,
    avg(length(b.body)) AS body FROM book b JOIN author a ON a.id = b.author GROUP BY a.country;
SELECT * FROM summary ORDER BY country;
SELECT year, count(*), min(title), max(title) FROM book WHERE year BETWEEN 1950 AND 1955
    GROUP BY year ORDER BY year;
SELECT a.name, count(*) AS n FROM author a JOIN book b ON b.author = a.id GROUP BY a.id
    ORDER BY n DESC, a.name LIMIT 5;
VACUUM;
REINDEX;
PRAGMA integrity_check;
SELECT count(*), sum(pages), total(length(title)) FROM book;
