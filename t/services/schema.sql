-- Test and demo database for ngx_replay_module, loaded by t/services/up
-- into database "replay" as role "replay".  Re-runnable: it drops and
-- recreates everything it owns.
--
--   games             one row per game; replay_url is the S3 key of its
--                     replay in bucket "replays" (a key, not a URL)
--   tournament_games  the many-rows case: tournament 999 has 10,000 rows
--   fixture_objects   every S3 object t/services/up uploads; "text"
--                     objects contain "bucket=<bucket> key=<key>\n", so a
--                     wrong object is never mistaken for the right one;
--                     "random" ones are deterministic pseudo-random bytes;
--                     put_options: more of put-object's parameters (JSON,
--                     its names: CacheControl, Metadata, StorageClass...).
--                     up writes DIR/fixtures/keys*.txt from this table.
--                     Buckets "replays" and "other" are private (unsigned
--                     requests get 403), "public" serves anyone.

\set ON_ERROR_STOP on
SET client_min_messages = warning;

DROP TABLE IF EXISTS tournament_games;
DROP TABLE IF EXISTS games;
DROP TABLE IF EXISTS fixture_objects;

CREATE TABLE fixture_objects (
    bucket        text   NOT NULL,
    key           text   NOT NULL,
    kind          text   NOT NULL DEFAULT 'text'
                         CHECK (kind IN ('text', 'random')),
    size          bigint CHECK ((kind = 'random') = (size IS NOT NULL)),
    content_type  text   NOT NULL DEFAULT 'application/octet-stream',
    put_options   jsonb,
    note          text,
    PRIMARY KEY (bucket, key),
    -- keys.txt is tab-separated, one key a line
    CHECK (key !~ E'[\\t\\n\\r]' AND octet_length(key) BETWEEN 1 AND 1024)
);

CREATE TABLE games (
    id             bigint PRIMARY KEY,
    tournament_id  bigint,
    game_folder    text,
    replay_url     text,          -- S3 key in bucket "replays"
    content_type   text,
    file_name      text,          -- download name (Content-Disposition)
    size           bigint,        -- expected object size, when known
    note           text           -- what the row is for
);
CREATE INDEX games_tournament_idx ON games (tournament_id);
CREATE INDEX games_folder_idx ON games (game_folder);

CREATE TABLE tournament_games (
    tournament_id  bigint  NOT NULL,
    position       integer NOT NULL,
    game_id        bigint  NOT NULL REFERENCES games (id),
    replay_url     text,
    PRIMARY KEY (tournament_id, position)
);


-- ---------------------------------------------------------------------
-- S3 objects

INSERT INTO fixture_objects (bucket, key, kind, size, content_type, note) VALUES
    ('replays', 'games/1/replay.bin',  'text', NULL, 'application/octet-stream', NULL),
    ('replays', 'games/2/replay.bin',  'text', NULL, 'application/octet-stream', NULL),
    ('replays', 'games/8/notes.txt',   'text', NULL, 'text/plain; charset=utf-8', 'stored with a non-default Content-Type'),
    ('replays', 'games/dup/a.bin',     'text', NULL, 'application/octet-stream', NULL),
    ('replays', 'games/dup/b.bin',     'text', NULL, 'application/octet-stream', NULL),
    ('replays', 'big/1mib.bin',        'random', 1048576,  'application/octet-stream', '1 MiB'),
    ('replays', 'big/50mib.bin',       'random', 52428800, 'application/octet-stream', '50 MiB'),
    -- decoys: a key that would escape to bucket "other" if normalised
    ('replays', '../other/secret.txt', 'text', NULL, 'application/octet-stream', 'decoy: literal key with a .. segment'),
    ('replays', '/other/secret.txt',   'text', NULL, 'application/octet-stream', 'decoy: literal key with a leading /'),
    ('other',   'secret.txt',          'text', NULL, 'application/octet-stream', 'must never be served'),
    ('other',   'games/1/replay.bin',  'text', NULL, 'application/octet-stream', 'same key as in replays, other bucket'),
    -- a key of exactly 1024 bytes, the S3 maximum
    ('replays', 'long/' || repeat('k', 1019), 'text', NULL, 'application/octet-stream', '1024-byte key'),
    -- the one object of the bucket that serves unsigned requests
    ('public',  'games/1/replay.bin',  'text', NULL, 'application/octet-stream', 'public bucket: served without a signature');

-- an object with every kind of metadata S3 answers with: the headers a
-- client may see (Cache-Control, Content-Disposition, Content-Language,
-- Expires) and S3's own that it must not (x-amz-meta-*,
-- x-amz-storage-class, x-amz-website-redirect-location)
INSERT INTO fixture_objects (bucket, key, content_type, put_options, note) VALUES
    ('replays', 'games/9/meta.bin', 'application/x-replay', '{
        "CacheControl": "public, max-age=3600",
        "ContentDisposition": "attachment; filename=\"from-s3.replay\"",
        "ContentLanguage": "en",
        "Expires": "2037-01-01T00:00:00Z",
        "StorageClass": "STANDARD_IA",
        "WebsiteRedirectLocation": "/elsewhere",
        "Metadata": {"mtime": "1700000000", "uploaded-by": "league-server"}
    }', 'object metadata: headers to relay and headers to drop');

-- keys with every character that needs care, one per object, plus the keys
-- a wrong normalisation would turn them into (each with its own content)
INSERT INTO fixture_objects (bucket, key, note)
SELECT 'replays', k, n FROM (VALUES
    ('special/a b.bin',          'space'),
    ('special/a+b.bin',          'plus (not space)'),
    ('special/bang!.bin',        '!'),
    ('special/dollar$.bin',      '$'),
    ('special/amp&.bin',         '&'),
    ('special/apos''.bin',       'apostrophe'),
    ('special/paren().bin',      '( )'),
    ('special/star*.bin',        '*'),
    ('special/comma,.bin',       ','),
    ('special/semi;.bin',        ';'),
    ('special/eq=.bin',          '='),
    ('special/colon:.bin',       ':'),
    ('special/at@.bin',          '@'),
    ('special/tilde~.bin',       '~ (unreserved: never encoded)'),
    ('special/pct%.bin',         '%'),
    ('special/pct%20.bin',       'literal %20, not a space'),
    ('special/pct%2F.bin',       'literal %2F, not a slash'),
    ('special/q?.bin',           '?'),
    ('special/hash#.bin',        '#'),
    ('special/all !$&''()*+,;=:@~%?#.bin', 'all of them'),
    ('special/other "<>\^`{|}[].bin',      'more characters that must be encoded'),
    ('special/café.bin',         'UTF-8, precomposed e-acute'),
    ('special/日本/リプレイ.bin', 'UTF-8, CJK'),
    ('special/dots/../up.bin',   '.. segment kept verbatim'),
    ('special/up.bin',           'what special/dots/../up.bin normalises to'),
    ('special/dot/./here.bin',   '. segment kept verbatim'),
    ('special/dot/here.bin',     'what special/dot/./here.bin normalises to'),
    ('special//double-slash.bin','empty segment kept verbatim'),
    ('special/double-slash.bin', 'what special//double-slash.bin normalises to'),
    ('special/trailing/',        'trailing slash'),
    ('special/trailing',         'what special/trailing/ normalises to'),
    ('/leading-slash.bin',       'leading slash'),
    ('leading-slash.bin',        'what /leading-slash.bin normalises to')
) AS t(k, n);


-- ---------------------------------------------------------------------
-- games

INSERT INTO games (id, tournament_id, game_folder, replay_url, content_type, file_name, note) VALUES
    (1,  10, 'games/1',   'games/1/replay.bin',  'application/octet-stream', 'game-1.replay', 'ok; shares tournament 10 with game 2'),
    (2,  10, 'games/2',   'games/2/replay.bin',  NULL, NULL, 'ok; no content_type, no file_name'),
    (3,  20, 'games/3',   NULL,                  'application/octet-stream', 'game-3.replay', 'NULL replay_url'),
    (4,  20, 'games/4',   '',                    'application/octet-stream', 'game-4.replay', 'empty replay_url'),
    (5,  30, 'big',       'big/1mib.bin',        'application/octet-stream', '1mib.bin',  '1 MiB object'),
    (6,  30, 'big',       'big/50mib.bin',       'application/octet-stream', '50mib.bin', '50 MiB object'),
    (7,  40, 'games/7',   'games/7/missing.bin', 'application/octet-stream', 'game-7.replay', 'no object: S3 answers 404'),
    (8,  40, 'games/8',   'games/8/notes.txt',   'text/plain; charset=utf-8', 'résumé "final";.txt', 'non-ASCII, quote and ; in file_name'),
    (9,  40, 'games/9',   'games/9/meta.bin',    NULL, NULL, 'object with metadata (x-amz-meta-*, Cache-Control, storage class)'),
    (10, 50, 'games/dup', 'games/dup/a.bin',     'application/octet-stream', 'dup-a.replay', 'shares game_folder with game 11'),
    (11, 50, 'games/dup', 'games/dup/b.bin',     'application/octet-stream', 'dup-b.replay', 'shares game_folder with game 10'),
    (12, 60, '..',        '../other/secret.txt', 'application/octet-stream', 'escape.replay', 'escape attempt: must get replays/"../other/secret.txt", never other/secret.txt'),
    (13, 60, '',          '/other/secret.txt',   'application/octet-stream', 'escape2.replay', 'escape attempt: must get replays/"/other/secret.txt"'),
    (14, 60, 'long',      'long/' || repeat('k', 1019), 'application/octet-stream', 'long.replay', '1024-byte key'),
    (15, 60, 'long',      'long/' || repeat('k', 1020), 'application/octet-stream', 'too-long.replay', 'no object: 1025-byte key, longer than S3 allows');

-- one game per special key, ids from 100 in key order (look them up by
-- replay_url rather than by id)
INSERT INTO games (id, tournament_id, game_folder, replay_url, content_type, file_name, note)
SELECT 99 + row_number() OVER (ORDER BY convert_to(key, 'UTF8')),
       70,
       'special',
       key,
       content_type,
       'special.replay',
       note
FROM fixture_objects
WHERE bucket = 'replays'
  AND (key LIKE 'special/%' OR key LIKE '%leading-slash.bin');

-- expected sizes of the objects of kind "random" (text ones: compare bytes
-- with the fixture files)
UPDATE games g SET size = f.size
FROM fixture_objects f
WHERE f.bucket = 'replays' AND f.key = g.replay_url AND f.size IS NOT NULL;


-- ---------------------------------------------------------------------
-- tournament_games: 2 rows for tournament 10, 10,000 for tournament 999

INSERT INTO tournament_games (tournament_id, position, game_id, replay_url) VALUES
    (10, 1, 1, 'games/1/replay.bin'),
    (10, 2, 2, 'games/2/replay.bin');

INSERT INTO tournament_games (tournament_id, position, game_id, replay_url)
SELECT 999, i, CASE WHEN i % 2 = 1 THEN 1 ELSE 2 END,
       CASE WHEN i % 2 = 1 THEN 'games/1/replay.bin' ELSE 'games/2/replay.bin' END
FROM generate_series(1, 10000) AS i;

ANALYZE fixture_objects, games, tournament_games;
