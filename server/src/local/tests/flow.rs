//! Submit, poll, download: both APIs end to end.

use serde_json::json;

use super::*;

#[tokio::test]
async fn matting_runs_from_submit_to_a_downloadable_rgba_result() {
    let h = start(config()).await;
    let kind = ApiKind::InstanceMatting;
    let task = h.sample_task("portrait");
    let data = h.submit(kind, vec![task.clone()]).await;
    let key = data["result_key"].as_str().unwrap().to_owned();
    assert_eq!(key.len(), 32);
    assert!(key.chars().all(|c| c.is_ascii_hexdigit()));
    assert_eq!(data["task_list"][0]["status"], "WAITING");
    assert_eq!(data["task_list"][0]["image"], task["image"]);
    assert_eq!(data["task_list"][0]["mask"], task["mask"]);
    assert!(data["task_list"][0].get("seed").is_none());

    let tasks = h.wait_done(kind, &key).await;
    assert_eq!(tasks[0]["status"], "SUCCESS", "{tasks:?}");
    assert_eq!(tasks[0]["message"], "success");
    let url = tasks[0]["results"][0].as_str().unwrap();
    assert_eq!(url, h.url(&format!("/results/{key}/0.png")));

    let (status, png) = h.get_bytes(url).await;
    assert_eq!(status, StatusCode::OK);
    let result = image::load_from_memory(&png).unwrap();
    assert_eq!(result.color(), image::ColorType::Rgba8);
    let rgba = result.to_rgba8();
    assert_eq!(rgba.dimensions(), (640, 480));
    assert_eq!(rgba.get_pixel(320, 300).0[3], 255, "subject kept");
    assert_eq!(rgba.get_pixel(10, 10).0[3], 0, "background cut away");
}

#[tokio::test]
async fn removal_submitted_on_the_query_path_fills_only_the_masked_region() {
    let h = start(config()).await;
    let kind = ApiKind::ObjectRemoval;
    let mut task = h.sample_task("clutter");
    task["seed"] = json!(2323);
    task["kernel_size"] = json!(7);
    // The matting document prints the query path for submit; the backend
    // accepts a submit body there for either API.
    let answer = h
        .post_json(
            kind.default_query_path(),
            &json!({"data": {"task_list": [task]}}),
        )
        .await;
    assert_eq!(answer.code(), 0, "{}", answer.json);
    let data = &answer.json["data"];
    assert_eq!(data["task_list"][0]["seed"], 2323);
    assert_eq!(data["task_list"][0]["kernel_size"], 7);
    let key = data["result_key"].as_str().unwrap();

    let tasks = h.wait_done(kind, key).await;
    assert_eq!(tasks[0]["status"], "SUCCESS", "{tasks:?}");
    let (_, png) = h.get_bytes(tasks[0]["results"][0].as_str().unwrap()).await;
    let result = image::load_from_memory(&png).unwrap();
    assert_eq!(result.color(), image::ColorType::Rgb8);
    let result = result.to_rgb8();

    let sample = crate::samples::removal_sample();
    let input = image::load_from_memory(&sample.image_png)
        .unwrap()
        .to_rgb8();
    let mask = image::load_from_memory(&sample.mask_png)
        .unwrap()
        .to_luma8();
    let (mut inside_changed, mut inside) = (0, 0);
    for (x, y, m) in mask.enumerate_pixels() {
        let near_mask = (x.saturating_sub(3)..=x + 3)
            .flat_map(|mx| (y.saturating_sub(3)..=y + 3).map(move |my| (mx, my)))
            .any(|(mx, my)| mx < 640 && my < 480 && mask.get_pixel(mx, my).0[0] == 255);
        if !near_mask {
            assert_eq!(
                result.get_pixel(x, y),
                input.get_pixel(x, y),
                "{x},{y} changed"
            );
        }
        if m.0[0] == 255 {
            inside += 1;
            inside_changed += usize::from(result.get_pixel(x, y) != input.get_pixel(x, y));
        }
    }
    assert!(
        inside_changed * 10 > inside * 9,
        "{inside_changed} of {inside} filled"
    );
    assert_eq!(h.backend.stats().jobs_created, 1);
}

#[tokio::test]
async fn removal_without_seed_gets_one_and_default_kernel() {
    let h = start(config()).await;
    let data = h
        .submit(ApiKind::ObjectRemoval, vec![h.sample_task("clutter")])
        .await;
    let task = &data["task_list"][0];
    assert!(task["seed"].as_i64().unwrap() >= 0, "{task}");
    assert_eq!(task["kernel_size"], 1);
}

#[tokio::test]
async fn a_worker_pool_of_one_keeps_the_second_task_waiting() {
    let h = start(LocalBackendConfig {
        workers: 1,
        faults: crate::local::FaultConfig {
            task_duration: Duration::from_millis(600),
            ..Default::default()
        },
        ..config()
    })
    .await;
    let kind = ApiKind::InstanceMatting;
    let task = h.sample_task("portrait");
    let data = h.submit(kind, vec![task.clone(), task]).await;
    let key = data["result_key"].as_str().unwrap();
    tokio::time::sleep(Duration::from_millis(250)).await;
    let answer = h.query(kind, key).await;
    let mut states: Vec<String> = answer.json["data"]["task_list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| format!("{}/{}", t["status"], t["message"]))
        .collect();
    states.sort();
    assert_eq!(states, [r#""RUNNING"/"running""#, r#""WAITING"/"waiting""#]);
    let tasks = h.wait_done(kind, key).await;
    assert!(tasks.iter().all(|t| t["status"] == "SUCCESS"));
}

#[tokio::test]
async fn failing_tasks_report_job_execution_failed() {
    let h = start(LocalBackendConfig {
        faults: crate::local::FaultConfig {
            task_failure_rate: 1.0,
            ..Default::default()
        },
        ..config()
    })
    .await;
    let data = h
        .submit(ApiKind::InstanceMatting, vec![h.sample_task("portrait")])
        .await;
    let key = data["result_key"].as_str().unwrap();
    let tasks = h.wait_done(ApiKind::InstanceMatting, key).await;
    assert_eq!(tasks[0]["status"], "FAILED");
    assert_eq!(tasks[0]["message"], "Job execution failed");
    assert!(tasks[0].get("results").is_none());
    let (status, _) = h.get_bytes(&h.url(&format!("/results/{key}/0.png"))).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn samples_are_served_and_unknown_files_are_404() {
    let h = start(config()).await;
    for sample in crate::samples::all() {
        let (status, png) = h
            .get_bytes(&h.url(&format!("/samples/{}.png", sample.name)))
            .await;
        assert_eq!((status, png), (StatusCode::OK, sample.image_png));
        // Query strings (e.g. to make URLs unique) are ignored.
        let url = h.url(&format!("/samples/{}-mask.png?n=3", sample.name));
        let (status, png) = h.get_bytes(&url).await;
        assert_eq!((status, png), (StatusCode::OK, sample.mask_png));
    }
    for path in [
        "/samples/nope.png",
        "/samples/portrait",
        "/results/abc/0.png",
        "/results/abc/x",
    ] {
        assert_eq!(
            h.get_bytes(&h.url(path)).await.0,
            StatusCode::NOT_FOUND,
            "{path}"
        );
    }
}
