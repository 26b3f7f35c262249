-- input:  fields_input  (the GeoParquet as read; optional columns added as NULL by the job;
--                        `kept`: the input columns carried into the output, a struct)
-- output: fields        (one row per input field, typed, in the store's CRS, with its bbox and
--                        geometry type; invalid polygons repaired and flagged `repaired`)
-- :source_crs is the file's CRS (ST_Transform's form), :store_crs the store's (its proj:code);
-- geom_type is the type as given, so that points and lines are refused rather than repaired
-- into something else; a geometry collection holding only polygons is reduced as their union
-- of parts (a MultiPolygon) and typed 'ST_GeometryCollection of polygons'.
WITH given AS (
  SELECT *,
         ST_GeometryType(geometry) = 'ST_GeometryCollection'
           AND ST_IsEmpty(ST_CollectionExtract(geometry, 1))
           AND ST_IsEmpty(ST_CollectionExtract(geometry, 2)) AS polygon_collection
  FROM {fields_input}
),
typed AS (
  SELECT CAST(feature_id AS BIGINT)                 AS feature_id,
         IF(:source_crs = :store_crs, g, ST_Transform(g, :source_crs, :store_crs)) AS geometry,
         IF(polygon_collection, 'ST_GeometryCollection of polygons',
            ST_GeometryType(geometry))              AS geom_type,
         COALESCE(CAST(label AS STRING), 'field')   AS label,
         kept,
         CAST(layer_year AS INT)                    AS layer_year
  FROM (SELECT *, IF(polygon_collection, ST_CollectionExtract(geometry, 3), geometry) AS g FROM given)
),
checked AS (
  SELECT *, COALESCE(NOT ST_IsValid(geometry), FALSE) AS repaired FROM typed
),
fixed AS (
  -- ST_MakeValid may return a collection with slivers of lower dimension: keep the polygons
  SELECT feature_id, geom_type, label, kept, layer_year, repaired,
         IF(repaired, ST_CollectionExtract(ST_MakeValid(geometry), 3), geometry) AS geometry
  FROM checked
)
-- an empty geometry has no extent (Sedona gives it infinite bounds): NULL here, like a null
-- geometry, so no stage assigns it a chunk (50_output.sql writes its bbox covering as NaN)
SELECT feature_id, geometry, label, kept, layer_year, geom_type, repaired,
       IF(ST_IsEmpty(geometry), NULL, ST_XMin(geometry)) AS xmin,
       IF(ST_IsEmpty(geometry), NULL, ST_YMin(geometry)) AS ymin,
       IF(ST_IsEmpty(geometry), NULL, ST_XMax(geometry)) AS xmax,
       IF(ST_IsEmpty(geometry), NULL, ST_YMax(geometry)) AS ymax
FROM fixed
