"""Benchmark of ``clinitune prepare`` on synthetic emergency-department notes.

What it measures, for each size N (``--sizes 10000 100000``; ``--quick`` = 2,000 notes):

1. **Synthetic data.** N ~2 KB ED notes (CSV: ``note_id, patient_id, patient_name, text``),
   deterministic from ``--seed``: varied section header spellings (``CHIEF COMPLAINT:``, ``CC:``,
   ``HPI:``, ``Review of Systems:``, ``PHYSICAL EXAMINATION:``, ``Labs:``, ``RESULTS``,
   ``ED Course/MDM``, ``A/P:``, ...), clinical content combined at random from a vocabulary of ~20
   presentations (the word 5-gram Jaccard between unrelated notes is measured and printed), a
   few notes per patient, and planted ground truth:

   * ~5% **exact duplicates** (same text, new ``note_id``; sometimes whitespace / line-ending /
     header-case changes, which ``clinitune.data.dedup.normalize`` collapses);
   * ~5% **near duplicates** (copy-forward: one or two contiguous edits such as an updated vitals
     line, an appended plan sentence, an added ED-course line, a deleted HPI sentence), each with
     a true word-5-gram Jaccard >= 0.85 computed with ``normalize`` -- recorded per pair, on the
     raw text and on the PHI-redacted text that prepare's dedup actually sees;
   * **identifiers** in ~35% of the notes (names from the ``patient_name`` column in several forms,
     phones, MRNs, dates with a year, e-mails, SSNs, street addresses, cities, ZIPs after a state),
     each kept as ground truth (``<workdir>/n<N>/truth.json``).

2. **The whole prepare**, as a child process: ``clinitune prepare <recipe> --run-dir <dir>
   --force`` (ingest -> PHI gate with ``policy: redact`` -> dedup -> sections -> task records ->
   patient split -> tokenization with ``smollm2-135m-instruct``'s tokenizer -> packing).
   ``--tasks`` picks the task builders per note: ``cpt`` (default: the HEAL-style recipe; every
   stage of the issue's target runs, CPT packing included, and the PHI check below sees every
   kept note's whole text), ``mdm`` (the ED paper's presentation -> MDM pairs; not packed, and
   only the sections that reach the pair are checkable for PHI), or ``mdm+cpt`` (both from every
   note: twice the tokenization, ~1,150 tokens per note; the default before session 4). By
   default the child runs the same typer app in-process with ``clinitune.progress.track`` /
   ``bar`` and a few prepare functions wrapped to time each stage (best effort: prepare's
   internals are being restructured); ``--plain-cli`` runs the console script instead.
   ``data.workers`` is passed (``--workers``, default 0 = all cores) only if the installed recipe
   schema has that field. Reported: wall time, notes/s, notes/s per core (cores = ``--workers``,
   or ``os.cpu_count()`` when it is 0 or the field does not exist), the child's CPU time (its own
   plus its reaped worker processes'), its peak RSS (``os.wait4`` rusage, taken by a small
   ``posix_spawn`` launcher so that this process's own size does not leak into it: the largest
   single process of the child's tree), the sampled peak RSS summed over the process tree
   (psutil, every 0.2 s), the CPU that *other* processes used meanwhile (``/proc/stat``: on a
   shared machine, anything above ~0.1 core means the timings are contended), and the RSS ratio
   between the largest and the smallest size.

3. **Quality, end to end.**
   * Dedup, from ``<run>/prepared/dedup_clusters.jsonl``: a planted pair is *found* when both
     notes are in one cluster (recall, by pair type and Jaccard bin). Precision = dropped notes
     that have a planted copy/original of their own in their cluster / all dropped notes (every
     dropped note is checked against its own cluster, so a wrong merge counts once per wrongly
     dropped note, whichever member survived).
   * PHI, from ``<run>/prepared/records/*.jsonl``: a planted identifier *leaks* when its string
     still occurs verbatim (whole word / whole number) in a record of that note (``instruction``,
     ``input``, ``completion``, ``text``). Only notes that reach the records can be checked (dropped
     duplicates cannot). The ``cpt`` task carries every note's whole text, so every identifier of a
     kept note is checkable. Also counted: ``[TYPE]`` placeholders in the cpt records of notes with
     no planted identifier (false positives of the gate, by type).

4. **Peer comparison** (``--no-peer`` to skip), on the same raw texts, each in its own child
   process, single process each: ``clinitune.data.dedup.dedup`` vs datatrove's MinHash dedup
   (``MinhashDedupSignature`` -> ``MinhashDedupBuckets`` -> ``MinhashDedupCluster``, run in-process,
   local temp folder). Settings matched as far as datatrove allows: 5-word shingles, the same
   band layout that clinitune's LSH picks at the threshold (14 bands x 9 rows = 126 hashes at
   0.8 / 128), no number normalization (datatrove's default replaces every digit run by 0),
   lower-casing and punctuation removal (both do it). Differences that remain: datatrove merges
   every band collision without verifying the Jaccard estimate (clinitune verifies each LSH
   candidate against ``threshold``), and it has no separate exact-match pass. Its stage 4
   (``MinhashDedupFilter``: re-reading and writing the kept documents) is not run -- the removal
   list is already known after stage 3.

   datatrove notes: 0.10's default English word tokenizer needs spaCy (``ImportError: Please
   install `spacy` to use en word tokenizer`` here; and it is slow),
   so it gets a whitespace tokenizer over its own ``simplify_text`` output (which already removed
   punctuation: equivalent to a ``\\w+`` regex tokenizer). Its ``xxhash`` helpers pass ``str`` to
   ``xxhash.xxh64_intdigest``, which xxhash >= 4 rejects ("Strings must be encoded before
   hashing"); with xxhash >= 4 installed the benchmark wraps the hash function to UTF-8-encode
   first (exactly what xxhash 3 did), instead of downgrading xxhash in the project venv.

Install and run (from the repository root)::

    .venv/bin/pip install -e '.[bench]'                       # datatrove (the peer)
    .venv/bin/python benchmarks/prepare_bench.py --quick       # smoke test, 2,000 notes
    .venv/bin/python benchmarks/prepare_bench.py --sizes 10000 100000 --out results.json

Outputs go to ``--workdir`` (default ``/tmp/clinitune-prepare-bench``): per size the CSV, the
ground truth, the recipe, the run directory and the child logs; the summary is printed as a table
and written as JSON (``--out``, default ``<workdir>/results.json``).

Targets printed next to the numbers (issue 3): >= 500 notes/s per core, RSS ratio 100k/10k
<= 1.5, dedup recall >= 0.95 and precision >= 0.99.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import platform
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
MODEL = "smollm2-135m-instruct"
TARGETS = {
    "notes_per_s_per_core": 500.0,
    "rss_ratio": 1.5,
    "dedup_recall": 0.95,
    "dedup_precision": 0.99,
}
SHINGLE = 5

# =============================================================================================
# Vocabulary. Everything here is invented; no real note text.
# =============================================================================================
# fmt: off
HEADERS: dict[str, list[str]] = {
    "cc": ["CHIEF COMPLAINT:", "Chief Complaint", "CC:", "Chief complaint:", "Reason for Visit:"],
    "hpi": ["HPI:", "History of Present Illness", "HISTORY OF PRESENT ILLNESS",
            "History of Present Illness:"],
    "ros": ["ROS", "Review of Systems:", "REVIEW OF SYSTEMS", "ROS:"],
    "pmh": ["PMH:", "Past Medical History", "PAST MEDICAL HISTORY:"],
    "meds": ["Medications:", "Home Medications", "MEDS:"],
    "allergies": ["Allergies:", "ALLERGIES"],
    "social": ["Social History:", "SOCIAL HISTORY", "SH:"],
    "pe": ["Physical Exam", "PHYSICAL EXAMINATION:", "PE:", "Exam:"],
    "results": ["Labs:", "RESULTS", "Results:", "Laboratory Data:", "Labs/Imaging:"],
    "imaging": ["Imaging:", "RADIOLOGY"],
    "course": ["ED Course", "ED COURSE:", "Emergency Department Course"],
    "mdm": ["MDM:", "Medical Decision Making", "MEDICAL DECISION MAKING:"],
    "course_mdm": ["ED Course/MDM", "ED Course and MDM:"],
    "ap": ["Assessment & Plan", "A/P:", "ASSESSMENT AND PLAN:", "Assessment/Plan"],
    "dx": ["Clinical Impression:", "Final Diagnosis:", "Diagnoses"],
    "dispo": ["Disposition", "DISPOSITION:", "Dispo:"],
}

PROFILES: list[dict[str, list[str]]] = [
    dict(cc=["chest pain", "chest pressure", "left-sided chest pain",
             "substernal chest discomfort"],
         quality=["pressure-like", "sharp", "squeezing", "dull and aching", "burning", "tight"],
         where=["substernal", "left-sided", "central", "retrosternal"],
         rad=["radiating to the left arm", "radiating to the jaw", "without radiation",
              "radiating through to the back"],
         agg=["exertion", "deep inspiration", "lying flat", "climbing stairs"],
         rel=["rest", "sitting forward", "sublingual nitroglycerin"],
         assoc=["diaphoresis", "nausea", "dyspnea on exertion", "lightheadedness", "palpitations"],
         neg=["fever", "cough", "unilateral leg swelling", "hemoptysis", "syncope",
              "recent travel"],
         exam=["Chest: chest wall nontender to palpation",
               "Chest: reproducible tenderness over the left costochondral junction",
               "Lungs: faint bibasilar crackles"],
         tests=["troponin", "ecg", "cxr", "cbc", "bmp", "ddimer"],
         ddx=["acute coronary syndrome", "pulmonary embolism", "aortic dissection", "pericarditis",
              "gastroesophageal reflux", "musculoskeletal chest pain", "pneumothorax"],
         treat=["aspirin 324 mg PO", "nitroglycerin 0.4 mg SL", "morphine 4 mg IV",
                "a GI cocktail", "ketorolac 15 mg IV"],
         dx=["Chest pain, unspecified", "NSTEMI", "Atypical chest pain", "Costochondritis"],
         reason=["HEART score calculated at {s}.",
                 "Serial high-sensitivity troponins were {trend}.",
                 "ECG without acute ST changes compared with the prior tracing.",
                 "Low suspicion for dissection given symmetric pulses and a normal mediastinum."],
         plan=["repeat troponin in 3 hours", "cardiology consultation", "outpatient stress testing",
               "heparin drip per ACS protocol", "continue aspirin", "admit to telemetry"]),
    dict(cc=["shortness of breath", "difficulty breathing", "dyspnea", "wheezing"],
         quality=["gradually worsening", "sudden onset", "intermittent", "constant"],
         where=["bilateral", "diffuse"], rad=["with chest tightness", "without chest pain"],
         agg=["exertion", "lying flat", "talking in full sentences"],
         rel=["home albuterol", "sitting upright", "rest"],
         assoc=["productive cough", "orthopnea", "leg swelling", "wheezing", "fatigue"],
         neg=["chest pain", "fever", "hemoptysis", "calf pain", "sick contacts"],
         exam=["Lungs: diffuse expiratory wheezes with prolonged expiratory phase",
               "Lungs: crackles at both bases", "Extremities: 2+ pitting edema to the shins"],
         tests=["cbc", "bmp", "bnp", "cxr", "vbg", "ecg", "troponin"],
         ddx=["COPD exacerbation", "asthma exacerbation", "CHF exacerbation", "pneumonia",
              "pulmonary embolism", "ACS", "anxiety"],
         treat=["DuoNeb x3", "methylprednisolone 125 mg IV", "furosemide 40 mg IV",
                "BiPAP at 10/5", "magnesium 2 g IV"],
         dx=["COPD exacerbation", "Acute on chronic systolic heart failure",
             "Asthma exacerbation, moderate"],
         reason=["Work of breathing improved after nebulized bronchodilators.",
                 "BNP elevated at {bnp} with vascular congestion on the film.",
                 "Wells score low and PERC negative, so PE was not pursued further."],
         plan=["continue scheduled nebulizers", "prednisone burst for 5 days",
               "diuresis with IV furosemide", "wean oxygen to keep saturation above 90 percent",
               "respiratory therapy evaluation"]),
    dict(cc=["abdominal pain", "right lower quadrant pain", "belly pain", "lower abdominal pain"],
         quality=["crampy", "sharp", "constant dull", "colicky", "stabbing"],
         where=["periumbilical, now migrated to the right lower quadrant", "diffuse",
                "right lower quadrant", "suprapubic"],
         rad=["without radiation", "radiating to the right groin"],
         agg=["movement", "coughing", "the car ride over", "eating"],
         rel=["lying still", "nothing"],
         assoc=["anorexia", "nausea", "one episode of emesis", "low-grade fever", "loose stools"],
         neg=["hematochezia", "melena", "dysuria", "vaginal discharge", "prior abdominal surgery"],
         exam=["Abdomen: tender in the right lower quadrant with voluntary guarding",
               "Abdomen: positive Rovsing sign, no rebound",
               "Abdomen: soft, mild suprapubic tenderness"],
         tests=["cbc", "bmp", "lipase", "ua", "bhcg", "ct_abd", "lactate"],
         ddx=["acute appendicitis", "ovarian torsion", "ectopic pregnancy", "nephrolithiasis",
              "mesenteric adenitis", "diverticulitis", "constipation"],
         treat=["ondansetron 4 mg IV", "morphine 4 mg IV", "a 1 liter normal saline bolus",
                "piperacillin-tazobactam 4.5 g IV", "acetaminophen 1 g IV"],
         dx=["Acute appendicitis without perforation", "Abdominal pain, RLQ",
             "Nonspecific abdominal pain"],
         reason=["CT shows a dilated appendix measuring {mm} mm with periappendiceal stranding.",
                 "Alvarado score of {s}.", "Serial abdominal exams remained benign."],
         plan=["general surgery consultation", "keep NPO", "IV antibiotics",
               "return for repeat exam in 12 hours if not improved", "pain control"]),
    dict(cc=["epigastric pain", "upper abdominal pain", "abdominal pain after drinking"],
         quality=["boring", "severe constant", "burning", "gnawing"],
         where=["epigastric", "left upper quadrant", "mid-epigastric"],
         rad=["radiating straight through to the back", "without radiation"],
         agg=["eating", "lying supine", "fatty meals"], rel=["leaning forward", "antacids"],
         assoc=["nausea", "repeated nonbloody emesis", "poor oral intake", "bloating"],
         neg=["jaundice", "hematemesis", "black stools", "chest pain", "fever"],
         exam=["Abdomen: epigastric tenderness without rebound or guarding",
               "Abdomen: mild distension, hypoactive bowel sounds",
               "Abdomen: negative Murphy sign"],
         tests=["cbc", "bmp", "lipase", "lfts", "us_ruq", "ecg", "troponin"],
         ddx=["acute pancreatitis", "peptic ulcer disease", "biliary colic", "cholecystitis",
              "gastritis", "inferior MI"],
         treat=["a 2 liter lactated Ringer bolus", "hydromorphone 0.5 mg IV",
                "pantoprazole 40 mg IV", "ondansetron 4 mg IV"],
         dx=["Acute pancreatitis, alcohol related", "Gastritis", "Biliary colic"],
         reason=["Lipase of {lip} meets criteria for pancreatitis.",
                 "Ultrasound without gallstones or ductal dilation.",
                 "BISAP score {s0}, suggesting lower risk."],
         plan=["aggressive IV hydration", "advance diet as tolerated",
               "alcohol cessation counseling", "trend lipase and LFTs", "GI follow up"]),
    dict(cc=["headache", "worst headache of life", "migraine", "head pain"],
         quality=["throbbing", "pressure-like", "band-like", "pounding", "sharp"],
         where=["bifrontal", "right temporal", "occipital", "behind the left eye"],
         rad=["radiating to the neck", "without radiation"],
         agg=["bright light", "loud noise", "bending over", "coughing"],
         rel=["a dark quiet room", "ibuprofen at home", "sleep"],
         assoc=["photophobia", "phonophobia", "nausea", "visual aura", "neck stiffness"],
         neg=["fever", "focal weakness", "speech difficulty", "head trauma",
              "anticoagulant use", "jaw claudication"],
         exam=["Neuro: no pronator drift, finger-to-nose intact",
               "Neck: supple without meningismus", "Eyes: fundi with sharp disc margins"],
         tests=["cbc", "bmp", "ct_head", "esr"],
         ddx=["migraine without aura", "tension headache", "subarachnoid hemorrhage",
              "meningitis", "temporal arteritis", "cerebral venous thrombosis"],
         treat=["prochlorperazine 10 mg IV", "diphenhydramine 25 mg IV", "ketorolac 15 mg IV",
                "a 1 liter normal saline bolus", "magnesium 2 g IV"],
         dx=["Migraine without aura, not intractable", "Tension-type headache",
             "Headache, unspecified"],
         reason=["Onset was gradual and not thunderclap in nature.",
                 "CT head without acute intracranial abnormality within 6 hours of onset.",
                 "Headache resolved after the migraine cocktail."],
         plan=["neurology follow up", "headache diary", "avoid analgesic overuse",
               "return for any neurologic symptoms", "sumatriptan as needed"]),
    dict(cc=["dizziness", "vertigo", "room spinning sensation"],
         quality=["episodic", "constant", "positional"],
         where=["with head turns to the right", "when rolling over in bed"],
         rad=["lasting seconds", "lasting hours"], agg=["head movement", "standing up quickly"],
         rel=["keeping still", "closing the eyes"],
         assoc=["nausea", "vomiting", "unsteady gait", "tinnitus"],
         neg=["hearing loss", "diplopia", "dysarthria", "facial droop", "limb weakness"],
         exam=["Neuro: positive Dix-Hallpike to the right with torsional nystagmus",
               "Neuro: HINTS exam reassuring", "Neuro: gait wide-based but steady"],
         tests=["cbc", "bmp", "ecg", "glucose", "ct_head"],
         ddx=["BPPV", "vestibular neuritis", "posterior circulation stroke", "orthostasis",
              "arrhythmia", "medication effect"],
         treat=["meclizine 25 mg PO", "ondansetron 4 mg ODT", "an Epley maneuver",
                "a 1 liter normal saline bolus"],
         dx=["Benign paroxysmal positional vertigo", "Dizziness", "Vestibular neuritis"],
         reason=["Symptoms reproduced with Dix-Hallpike and resolved after repositioning.",
                 "Orthostatic vital signs were negative.",
                 "Low risk features on HINTS, so MRI was not pursued emergently."],
         plan=["vestibular rehabilitation exercises", "meclizine as needed for 3 days",
               "fall precautions", "ENT follow up"]),
    dict(cc=["syncope", "passed out", "fainting episode", "near syncope"],
         quality=["brief", "witnessed", "unwitnessed"],
         where=["while standing in line", "after urinating", "at church", "while seated"],
         rad=["lasting less than a minute", "with rapid return to baseline"],
         agg=["prolonged standing", "heat"], rel=["lying down"],
         assoc=["prodromal warmth", "tunnel vision", "diaphoresis", "palpitations beforehand"],
         neg=["tongue biting", "incontinence", "postictal confusion", "chest pain",
              "exertional onset", "head strike"],
         exam=["Cardiac: no murmur appreciated", "Neuro: nonfocal, at baseline",
               "Skin: no signs of trauma"],
         tests=["cbc", "bmp", "ecg", "troponin", "bhcg", "glucose"],
         ddx=["vasovagal syncope", "orthostatic hypotension", "arrhythmia", "aortic stenosis",
              "seizure", "pulmonary embolism"],
         treat=["a 1 liter normal saline bolus", "oral hydration"],
         dx=["Vasovagal syncope", "Syncope and collapse", "Orthostatic syncope"],
         reason=["San Francisco syncope rule negative.",
                 "ECG with normal intervals and no pre-excitation or Brugada pattern.",
                 "Canadian Syncope Risk Score of {s0}."],
         plan=["outpatient Holter monitor", "hydration", "cardiology follow up",
               "avoid driving until cleared", "echocardiogram as outpatient"]),
    dict(cc=["fever", "fever and chills", "feeling feverish", "fever and body aches"],
         quality=["high", "intermittent", "persistent"], where=["measured at home"],
         rad=["to {t} F at home"], agg=["evening"], rel=["acetaminophen"],
         assoc=["rigors", "myalgias", "dysuria", "decreased appetite", "malaise"],
         neg=["rash", "stiff neck", "cough", "abdominal pain", "recent hospitalization"],
         exam=["General: flushed, mildly ill-appearing", "Back: left CVA tenderness",
               "Skin: warm, no petechiae"],
         tests=["cbc", "bmp", "lactate", "ua", "blood_cx", "cxr", "flu"],
         ddx=["urinary tract infection", "pyelonephritis", "influenza", "pneumonia",
              "bacteremia", "viral syndrome"],
         treat=["ceftriaxone 1 g IV", "acetaminophen 1 g PO", "a 30 mL/kg crystalloid bolus",
                "vancomycin 1.5 g IV"],
         dx=["Acute pyelonephritis", "Sepsis due to urinary tract infection", "Viral syndrome"],
         reason=["Meets SIRS criteria with a lactate of {lac}.",
                 "Urinalysis with {wbc} WBC per hpf and positive nitrite.",
                 "Blood cultures drawn prior to antibiotics."],
         plan=["admit to medicine", "continue ceftriaxone", "follow urine culture",
               "trend lactate", "cephalexin for 10 days if discharged"]),
    dict(cc=["cough", "productive cough", "cough and fever"],
         quality=["productive of green sputum", "dry", "hacking", "worse at night"],
         where=["for the past week"], rad=["with pleuritic chest pain"],
         agg=["deep breaths", "cold air"], rel=["cough drops"],
         assoc=["fever", "shortness of breath", "pleuritic chest pain", "fatigue", "sweats"],
         neg=["hemoptysis", "weight loss", "sick contacts", "leg swelling"],
         exam=["Lungs: rhonchi over the right lower lobe", "Lungs: egophony at the left base",
               "General: coughing intermittently during the exam"],
         tests=["cbc", "bmp", "cxr", "flu", "procal", "lactate"],
         ddx=["community-acquired pneumonia", "acute bronchitis", "influenza", "COVID-19",
              "aspiration pneumonia"],
         treat=["azithromycin 500 mg PO", "ceftriaxone 1 g IV", "a DuoNeb", "acetaminophen 650 mg"],
         dx=["Community-acquired pneumonia", "Acute bronchitis", "Influenza A"],
         reason=["CURB-65 of {s0}, appropriate for outpatient treatment.",
                 "Chest film with a right lower lobe consolidation.",
                 "Ambulatory saturation stayed above 94 percent."],
         plan=["amoxicillin plus azithromycin", "incentive spirometry",
               "repeat chest film in 6 weeks", "return for worsening dyspnea"]),
    dict(cc=["flank pain", "left flank pain", "kidney stone pain"],
         quality=["colicky", "severe intermittent", "sharp waxing and waning"],
         where=["left flank", "right flank"], rad=["radiating to the groin"],
         agg=["nothing in particular"], rel=["nothing"],
         assoc=["nausea", "gross hematuria", "urinary urgency", "restlessness"],
         neg=["fever", "dysuria", "prior stones", "abdominal surgery"],
         exam=["Back: left CVA tenderness", "Abdomen: soft without peritoneal signs",
               "General: writhing, unable to find a comfortable position"],
         tests=["cbc", "bmp", "ua", "ct_stone"],
         ddx=["ureterolithiasis", "pyelonephritis", "AAA", "renal infarct", "biliary colic"],
         treat=["ketorolac 15 mg IV", "ondansetron 4 mg IV", "morphine 4 mg IV",
                "tamsulosin 0.4 mg PO"],
         dx=["Left ureteral stone", "Renal colic", "Nephrolithiasis"],
         reason=["CT shows a {mm} mm obstructing stone at the UVJ with mild hydronephrosis.",
                 "No signs of infection on urinalysis.", "Creatinine at baseline."],
         plan=["tamsulosin for stone passage", "strain urine", "urology follow up",
               "return for fever or intractable pain", "oxycodone for breakthrough pain"]),
    dict(cc=["low back pain", "back pain", "back strain"],
         quality=["aching", "sharp", "spasm-like", "burning"],
         where=["lumbar", "right lower back", "paraspinal"],
         rad=["radiating down the right leg", "without radiation"],
         agg=["bending", "lifting", "prolonged sitting"], rel=["heat", "lying flat"],
         assoc=["muscle spasm", "stiffness"],
         neg=["saddle anesthesia", "bowel or bladder incontinence", "fever", "IV drug use",
              "history of cancer", "leg weakness"],
         exam=["Back: paraspinal muscle tenderness without midline tenderness",
               "Neuro: straight leg raise positive on the right",
               "Neuro: strength 5/5 in bilateral lower extremities, reflexes symmetric"],
         tests=["ua"],
         ddx=["lumbar strain", "lumbar radiculopathy", "cauda equina syndrome",
              "spinal epidural abscess", "nephrolithiasis"],
         treat=["ibuprofen 600 mg PO", "cyclobenzaprine 5 mg PO", "a lidocaine patch",
                "diazepam 5 mg PO"],
         dx=["Acute low back strain", "Lumbar radiculopathy", "Low back pain"],
         reason=["No red flag features on history or exam.",
                 "Imaging not indicated per guidelines.", "Ambulating independently."],
         plan=["NSAIDs with food", "muscle relaxant at night", "physical therapy referral",
               "return for weakness or incontinence"]),
    dict(cc=["ankle injury", "right ankle pain", "twisted ankle", "ankle sprain"],
         quality=["sharp", "throbbing", "aching"],
         where=["lateral right ankle", "medial left ankle", "over the lateral malleolus"],
         rad=["without radiation"], agg=["weight bearing", "walking"], rel=["ice", "elevation"],
         assoc=["swelling", "bruising", "difficulty bearing weight"],
         neg=["numbness", "other injuries", "head strike", "loss of consciousness"],
         exam=["Extremities: swelling and ecchymosis over the lateral malleolus",
               "Extremities: tenderness at the ATFL, no bony tenderness at the posterior malleolus",
               "Extremities: distal pulses intact, sensation intact"],
         tests=["xr_ankle"],
         ddx=["ankle sprain", "lateral malleolus fracture", "fifth metatarsal fracture",
              "syndesmotic injury"],
         treat=["ibuprofen 600 mg PO", "an ACE wrap", "an air cast", "crutches"],
         dx=["Sprain of the right ankle", "Closed fracture of the lateral malleolus"],
         reason=["Ottawa ankle rules positive, so films were obtained.",
                 "X-ray without acute fracture.", "Neurovascularly intact after splinting."],
         plan=["RICE", "weight bear as tolerated", "orthopedics follow up in 1 week",
               "NSAIDs as needed"]),
    dict(cc=["fall", "mechanical fall", "fall with head strike"],
         quality=["mechanical", "ground-level"], where=["at home", "in the bathroom", "outside"],
         rad=["striking the left side of the head"], agg=["movement"], rel=["rest"],
         assoc=["left hip pain", "scalp abrasion", "headache"],
         neg=["loss of consciousness", "prodrome", "neck pain", "vomiting", "anticoagulant use"],
         exam=["Head: 2 cm hematoma over the left parietal scalp",
               "Extremities: left hip with full range of motion, no shortening or rotation",
               "Neck: no midline C-spine tenderness"],
         tests=["ct_head", "xr_hip", "cbc", "bmp", "ecg"],
         ddx=["intracranial hemorrhage", "hip fracture", "syncope", "UTI", "deconditioning"],
         treat=["acetaminophen 1 g PO", "wound cleansing", "tetanus booster"],
         dx=["Fall, initial encounter", "Contusion of scalp", "Closed head injury"],
         reason=["Canadian CT head rule applied given age.",
                 "CT head negative for hemorrhage or fracture.",
                 "Ambulated with a walker at baseline."],
         plan=["home with family", "PT evaluation", "home safety assessment",
               "return for confusion or vomiting"]),
    dict(cc=["laceration", "hand laceration", "cut finger", "forearm laceration"],
         quality=["clean", "linear", "jagged"],
         where=["on the left palm", "on the right index finger", "on the dorsal forearm"],
         rad=["from a kitchen knife", "from broken glass", "from a box cutter"],
         agg=["movement"], rel=["pressure"],
         assoc=["bleeding controlled with pressure"],
         neg=["numbness", "weakness", "foreign body sensation"],
         exam=["Skin: 3 cm linear laceration, no tendon exposure",
               "Extremities: full flexion and extension against resistance",
               "Extremities: two-point discrimination intact distally"],
         tests=["xr_hand"],
         ddx=["simple laceration", "tendon injury", "retained foreign body", "nerve injury"],
         treat=["lidocaine 1% local infiltration", "copious irrigation",
                "4-0 nylon simple interrupted sutures", "a Tdap booster"],
         dx=["Laceration of left hand without foreign body", "Simple laceration of finger"],
         reason=["Wound explored in a bloodless field, no tendon involvement.",
                 "No foreign body on X-ray."],
         plan=["suture removal in 10 days", "wound care instructions",
               "return for signs of infection", "keep dry for 24 hours"]),
    dict(cc=["allergic reaction", "hives", "lip swelling", "itchy rash after eating"],
         quality=["diffuse", "rapidly spreading"], where=["on the trunk and arms", "lips"],
         rad=["after eating shrimp", "after a new medication"], agg=["heat"], rel=["antihistamine"],
         assoc=["pruritus", "urticaria", "throat tightness", "lip swelling"],
         neg=["stridor", "wheezing", "vomiting", "syncope", "tongue swelling"],
         exam=["Skin: diffuse urticarial wheals", "HEENT: mild upper lip angioedema",
               "Lungs: clear, no stridor"],
         tests=[], ddx=["anaphylaxis", "urticaria", "angioedema", "contact dermatitis"],
         treat=["diphenhydramine 50 mg IV", "famotidine 20 mg IV", "methylprednisolone 125 mg IV",
                "epinephrine 0.3 mg IM"],
         dx=["Allergic reaction, initial encounter", "Acute urticaria", "Anaphylaxis"],
         reason=["Observed for 4 hours without recurrence.",
                 "Two organ systems involved so epinephrine was given."],
         plan=["prescribe EpiPen", "prednisone for 4 days", "cetirizine daily",
               "allergy referral", "avoid the trigger"]),
    dict(cc=["palpitations", "racing heart", "heart fluttering"],
         quality=["sudden onset", "intermittent", "sustained"], where=["at rest"],
         rad=["lasting several hours"], agg=["caffeine"], rel=["vagal maneuvers"],
         assoc=["lightheadedness", "mild dyspnea", "anxiety"],
         neg=["chest pain", "syncope", "stimulant use", "weight loss"],
         exam=["Cardiac: irregularly irregular, rate 130s",
               "Cardiac: regular tachycardia, no murmur", "Neck: no thyromegaly"],
         tests=["ecg", "cbc", "bmp", "tsh", "troponin", "mag"],
         ddx=["atrial fibrillation with RVR", "SVT", "sinus tachycardia", "hyperthyroidism",
              "anemia"],
         treat=["diltiazem 10 mg IV", "adenosine 6 mg IV push", "metoprolol 5 mg IV",
                "a 1 liter normal saline bolus"],
         dx=["Atrial fibrillation with rapid ventricular response",
             "Supraventricular tachycardia", "Palpitations"],
         reason=["CHA2DS2-VASc of {s0}.", "Rate controlled to the 90s after diltiazem.",
                 "Converted to sinus rhythm with adenosine."],
         plan=["start apixaban", "oral diltiazem", "cardiology follow up",
               "event monitor", "check TSH"]),
    dict(cc=["weakness", "left-sided weakness", "slurred speech", "facial droop"],
         quality=["sudden", "progressive"], where=["left arm and leg", "right face"],
         rad=["last known well {h} hours prior"], agg=["nothing"], rel=["nothing"],
         assoc=["slurred speech", "facial droop", "gait difficulty"],
         neg=["headache", "seizure activity", "trauma", "fever"],
         exam=["Neuro: left pronator drift, NIHSS {s}",
               "Neuro: right lower facial droop with mild dysarthria",
               "Neuro: decreased sensation left hemibody"],
         tests=["glucose", "cbc", "bmp", "inr", "ct_head", "cta", "ecg"],
         ddx=["acute ischemic stroke", "intracranial hemorrhage", "TIA", "hypoglycemia",
              "Todd paralysis", "complex migraine"],
         treat=["tenecteplase per protocol", "labetalol 10 mg IV", "aspirin 300 mg PR"],
         dx=["Acute ischemic stroke", "Transient ischemic attack"],
         reason=["Code stroke activated at arrival.", "CTA without large vessel occlusion.",
                 "Within the thrombolysis window and no contraindications."],
         plan=["admit to the stroke unit", "neuro checks every hour", "MRI brain",
               "permissive hypertension", "swallow screen before oral intake"]),
    dict(cc=["vomiting and diarrhea", "nausea and vomiting", "diarrhea"],
         quality=["watery", "nonbloody", "frequent"], where=["since last night"],
         rad=["with {n} episodes today"], agg=["oral intake"], rel=["nothing"],
         assoc=["crampy abdominal pain", "subjective fever", "decreased urination"],
         neg=["blood in the stool", "recent antibiotics", "travel", "severe focal pain"],
         exam=["Abdomen: diffusely mildly tender, hyperactive bowel sounds",
               "HEENT: dry mucous membranes", "Skin: decreased turgor"],
         tests=["cbc", "bmp", "lipase", "ua"],
         ddx=["viral gastroenteritis", "food poisoning", "C. difficile colitis",
              "early appendicitis", "DKA"],
         treat=["ondansetron 4 mg IV", "a 1 liter normal saline bolus", "oral rehydration"],
         dx=["Acute gastroenteritis", "Dehydration", "Nausea with vomiting"],
         reason=["Tolerated a PO challenge after antiemetics.",
                 "Mild prerenal AKI with a creatinine of {cr}."],
         plan=["ondansetron ODT as needed", "oral hydration", "BRAT diet",
               "return for bloody stools or inability to keep fluids down"]),
    dict(cc=["high blood sugar", "hyperglycemia", "elevated glucose"],
         quality=["persistent"], where=["on the home meter"], rad=["reading HIGH"],
         agg=["missed insulin"], rel=["insulin"],
         assoc=["polyuria", "polydipsia", "fatigue", "blurry vision"],
         neg=["abdominal pain", "vomiting", "confusion", "fever"],
         exam=["General: tired appearing", "HEENT: dry mucous membranes",
               "Abdomen: soft, nontender"],
         tests=["glucose", "bmp", "vbg", "ua", "cbc"],
         ddx=["DKA", "HHS", "hyperglycemia without ketosis", "infection"],
         treat=["insulin regular 10 units IV", "a 2 liter normal saline bolus",
                "potassium chloride 20 mEq PO"],
         dx=["Type 2 diabetes with hyperglycemia", "Diabetic ketoacidosis"],
         reason=["Anion gap of {ag}, beta-hydroxybutyrate {bhb}.",
                 "Glucose improved to {glu} after fluids and insulin."],
         plan=["resume home insulin", "diabetes education", "PCP follow up in 3 days",
               "DKA protocol", "check A1c"]),
    dict(cc=["sore throat", "throat pain", "painful swallowing"],
         quality=["scratchy", "severe", "constant"], where=["bilateral"],
         rad=["radiating to the ears"], agg=["swallowing"], rel=["lozenges"],
         assoc=["fever", "odynophagia", "tender neck glands", "muffled voice"],
         neg=["drooling", "trismus", "cough", "rash"],
         exam=["HEENT: tonsillar exudates bilaterally, uvula midline",
               "Neck: tender anterior cervical adenopathy", "HEENT: no peritonsillar bulge"],
         tests=["strep", "flu"],
         ddx=["streptococcal pharyngitis", "viral pharyngitis", "peritonsillar abscess",
              "mononucleosis", "epiglottitis"],
         treat=["dexamethasone 10 mg PO", "ibuprofen 600 mg PO", "penicillin G benzathine IM"],
         dx=["Streptococcal pharyngitis", "Acute pharyngitis"],
         reason=["Centor score of {s}.", "Rapid strep {posneg}."],
         plan=["amoxicillin for 10 days", "salt water gargles", "ENT if worsening"]),
]

LABS: dict[str, list[tuple[str, float, float, int, str]]] = {
    # name, low, high, decimals, unit
    "cbc": [("WBC", 3.8, 17.5, 1, "K/uL"), ("Hgb", 8.5, 16.8, 1, "g/dL"), ("Hct", 27, 49, 0, "%"),
            ("Plt", 110, 430, 0, "K/uL")],
    "bmp": [("Na", 128, 146, 0, "mmol/L"), ("K", 3.1, 5.6, 1, "mmol/L"), ("Cl", 95, 110, 0, ""),
            ("HCO3", 16, 30, 0, ""), ("BUN", 6, 48, 0, "mg/dL"), ("Cr", 0.6, 2.4, 2, "mg/dL"),
            ("Glucose", 72, 320, 0, "mg/dL")],
    "troponin": [("hs-Troponin", 2, 95, 0, "ng/L")],
    "lipase": [("Lipase", 12, 1900, 0, "U/L")],
    "lfts": [("AST", 12, 190, 0, "U/L"), ("ALT", 9, 210, 0, "U/L"), ("Alk phos", 40, 260, 0, ""),
             ("T bili", 0.2, 3.4, 1, "mg/dL")],
    "lactate": [("Lactate", 0.6, 4.8, 1, "mmol/L")],
    "ddimer": [("D-dimer", 110, 2400, 0, "ng/mL")],
    "bnp": [("BNP", 20, 2600, 0, "pg/mL")],
    "vbg": [("pH", 7.18, 7.44, 2, ""), ("pCO2", 32, 68, 0, "mmHg")],
    "glucose": [("POC glucose", 65, 480, 0, "mg/dL")],
    "inr": [("INR", 0.9, 3.2, 1, ""), ("PTT", 24, 41, 0, "s")],
    "tsh": [("TSH", 0.05, 6.8, 2, "mIU/L")],
    "mag": [("Mg", 1.5, 2.6, 1, "mg/dL")],
    "esr": [("ESR", 2, 85, 0, "mm/h"), ("CRP", 0.1, 14.5, 1, "mg/dL")],
    "procal": [("Procalcitonin", 0.02, 3.5, 2, "ng/mL")],
}
QUAL_TESTS: dict[str, tuple[str, list[str]]] = {
    "ua": ("UA", ["trace leukocyte esterase, nitrite negative, 3-5 WBC/hpf",
                  "large leukocyte esterase, nitrite positive, >50 WBC/hpf, many bacteria",
                  "moderate blood, 10-20 RBC/hpf, no bacteria", "unremarkable",
                  "1+ ketones, specific gravity 1.030"]),
    "bhcg": ("Urine hCG", ["negative", "negative"]),
    "flu": ("Flu/COVID swab", ["negative", "influenza A positive", "negative for all targets"]),
    "strep": ("Rapid strep", ["positive", "negative, culture sent"]),
    "blood_cx": ("Blood cultures", ["x2 drawn and pending", "pending"]),
    "ecg": ("ECG", ["sinus rhythm at {hr}, normal axis, no acute ST-T changes",
                    "sinus tachycardia at {hr}, nonspecific T wave flattening",
                    "atrial fibrillation with rate {hr}, no ST elevation",
                    "normal sinus rhythm, QTc {qtc} ms, no ischemic changes",
                    "sinus bradycardia at 5{n}, first degree AV block"]),
}
IMAGING: dict[str, tuple[str, list[str]]] = {
    "cxr": ("Chest X-ray", ["no acute cardiopulmonary process", "right lower lobe consolidation",
                            "mild pulmonary vascular congestion, small bilateral effusions",
                            "hyperinflation without focal opacity", "no pneumothorax"]),
    "ct_abd": ("CT abdomen/pelvis with contrast",
               ["dilated appendix with periappendiceal stranding, no abscess",
                "no acute intra-abdominal process", "sigmoid diverticulitis without abscess",
                "moderate stool burden, normal appendix"]),
    "ct_head": ("CT head without contrast", ["no acute intracranial abnormality",
                                             "chronic small vessel ischemic changes, nothing acute",
                                             "no hemorrhage, mass effect or fracture"]),
    "cta": ("CTA head and neck", ["no large vessel occlusion", "mild atherosclerotic disease"]),
    "us_ruq": ("RUQ ultrasound", ["no cholelithiasis, CBD 4 mm",
                                  "cholelithiasis without wall thickening",
                                  "fatty liver, no gallstones"]),
    "ct_stone": ("CT renal stone protocol", ["{mm} mm left UVJ stone with mild hydronephrosis",
                                             "{mm} mm right proximal ureteral stone",
                                             "no stone, no hydronephrosis"]),
    "xr_ankle": ("X-ray right ankle", ["no fracture or dislocation, soft tissue swelling",
                                       "nondisplaced distal fibula fracture",
                                       "no acute osseous abnormality"]),
    "xr_hip": ("X-ray left hip and pelvis", ["no fracture", "degenerative changes, no fracture"]),
    "xr_hand": ("X-ray left hand", ["no radiopaque foreign body, no fracture"]),
}

PMH = ["hypertension", "type 2 diabetes", "hyperlipidemia", "asthma", "COPD",
       "atrial fibrillation", "CAD s/p PCI", "GERD", "hypothyroidism", "depression", "anxiety",
       "CKD stage 3", "obesity", "migraines", "osteoarthritis", "BPH", "prior DVT",
       "obstructive sleep apnea", "HFrEF", "seizure disorder", "chronic low back pain",
       "iron deficiency anemia", "gout", "HIV on ART", "cirrhosis", "prediabetes", "glaucoma"]
MEDS = ["lisinopril 20 mg daily", "metformin 1000 mg BID", "atorvastatin 40 mg nightly",
        "albuterol inhaler PRN", "apixaban 5 mg BID", "levothyroxine 75 mcg daily",
        "omeprazole 20 mg daily", "sertraline 50 mg daily", "amlodipine 10 mg daily",
        "metoprolol succinate 50 mg daily", "insulin glargine 24 units nightly",
        "furosemide 40 mg daily", "gabapentin 300 mg TID", "tamsulosin 0.4 mg daily",
        "aspirin 81 mg daily", "losartan 50 mg daily", "hydrochlorothiazide 25 mg daily",
        "fluticasone nasal spray", "montelukast 10 mg nightly", "escitalopram 10 mg daily",
        "allopurinol 100 mg daily", "warfarin 5 mg daily", "carvedilol 12.5 mg BID",
        "tiotropium inhaler daily", "empagliflozin 10 mg daily"]
ALLERGIES = ["NKDA", "penicillin (rash)", "sulfa drugs (hives)", "codeine (nausea)",
             "iodinated contrast (itching)", "latex", "shellfish", "morphine (pruritus)",
             "No known drug allergies", "lisinopril (angioedema)", "cephalexin (rash)"]
TOBACCO = ["never smoker", "former smoker, quit {n} years ago", "smokes {n} cigarettes per day",
           "{n} pack-year history, still smoking", "vapes daily"]
ALCOHOL = ["drinks socially", "denies alcohol use", "{n} beers per week",
           "{n} glasses of wine on weekends", "heavy daily alcohol use"]
DRUGS = ["no illicit drug use", "occasional marijuana", "denies IV drug use",
         "history of opioid use disorder, on buprenorphine"]
LIVING = ["lives with spouse", "lives alone", "lives with daughter", "lives in assisted living",
          "lives with roommates", "lives with parents", "lives with partner and two children"]
JOBS = ["teacher", "electrician", "nurse", "truck driver", "accountant", "construction worker",
        "cashier", "mechanic", "chef", "software engineer", "farmer", "mail carrier", "barista",
        "plumber", "warehouse worker", "paralegal"]
ROS_SYSTEMS: dict[str, list[str]] = {
    "Constitutional": ["fever", "chills", "weight loss", "fatigue", "night sweats"],
    "Eyes": ["vision changes", "eye pain", "diplopia"],
    "ENT": ["sore throat", "rhinorrhea", "ear pain", "congestion"],
    "Cardiovascular": ["chest pain", "palpitations", "leg swelling", "orthopnea"],
    "Respiratory": ["cough", "shortness of breath", "wheezing", "hemoptysis"],
    "GI": ["nausea", "vomiting", "diarrhea", "abdominal pain", "melena", "constipation"],
    "GU": ["dysuria", "hematuria", "frequency", "flank pain"],
    "MSK": ["back pain", "joint pain", "myalgias", "neck stiffness"],
    "Skin": ["rash", "wounds", "itching"],
    "Neuro": ["headache", "focal weakness", "numbness", "dizziness", "syncope"],
    "Psych": ["depressed mood", "anxiety", "suicidal ideation"],
    "Heme": ["easy bruising", "abnormal bleeding"],
}
EXAM: dict[str, list[str]] = {
    "General": ["well-appearing, in no acute distress", "uncomfortable appearing but nontoxic",
                "alert and conversant", "resting comfortably on the stretcher",
                "obese, in mild distress"],
    "HEENT": ["normocephalic, atraumatic, moist mucous membranes",
              "PERRL, EOMI, oropharynx clear", "TMs clear bilaterally, no sinus tenderness",
              "conjunctivae pink, sclerae anicteric"],
    "Neck": ["supple, no JVD", "full range of motion, no meningismus", "no lymphadenopathy"],
    "Cardiac": ["regular rate and rhythm, no murmurs, rubs or gallops",
                "tachycardic, regular rhythm", "normal S1 and S2, no murmur",
                "RRR, 2/6 systolic murmur at the right upper sternal border"],
    "Lungs": ["clear to auscultation bilaterally", "no increased work of breathing",
              "good air movement throughout, no wheezes or rales",
              "speaking in full sentences, lungs clear"],
    "Abdomen": ["soft, nontender, nondistended", "normal bowel sounds, no masses",
                "obese, soft, no rebound or guarding"],
    "Extremities": ["no edema, 2+ distal pulses", "warm and well perfused",
                    "calves soft and nontender", "no clubbing or cyanosis"],
    "Skin": ["warm and dry, no rashes", "capillary refill under 2 seconds", "no jaundice"],
    "Neuro": ["alert and oriented x3, no focal deficits",
              "CN II-XII intact, strength 5/5 throughout", "steady gait",
              "sensation intact to light touch"],
    "Psych": ["normal mood and affect", "anxious appearing", "cooperative, linear thought"],
}
CONSULTANTS = ["cardiology", "general surgery", "the hospitalist", "neurology", "urology",
               "orthopedics", "GI", "the ICU team", "ENT", "the patient's PCP", "pharmacy"]
COURSE_EVENTS = [
    "Patient given {treat}.", "Reassessed, pain improved to {n}/10.",
    "Labs resulted and reviewed.", "Discussed with {consultant}, who agrees with the plan.",
    "Tolerating PO without emesis.", "Ambulated in the hallway without difficulty.",
    "Repeat vitals stable.", "Family updated at bedside.", "Remains hemodynamically stable.",
    "Symptoms improved after {treat}.", "Signed out to the oncoming provider pending {test}.",
    "Patient resting comfortably, no new complaints.", "Case reviewed with the attending.",
]
CONTEXT = [
    "Took {otc} at home without relief.", "Had a similar episode {n} months ago.",
    "Arrived by EMS.", "Was sent in by urgent care.", "Last oral intake around {hhmm}.",
    "Symptoms started while at work.", "Has not seen a doctor for this before.",
    "Ran out of home medications {n} days ago.", "Recently started a new medication.",
    "Spouse at bedside contributes to the history.", "No recent illness or travel.",
    "Symptoms have been progressively worse over the past {n} days.",
    "Reports poor sleep due to the symptoms.", "Is otherwise in usual state of health.",
]
OTC = ["ibuprofen", "acetaminophen", "an antacid", "Pepto-Bismol", "naproxen", "a leftover "
       "muscle relaxant", "cough syrup", "loratadine"]
ADDENDA = [
    "Patient re-evaluated prior to disposition and is comfortable.",
    "Discussed return precautions in detail and the patient voiced understanding.",
    "Prescriptions sent to the pharmacy on file.", "Work note provided.",
    "All questions answered and the patient agrees with the plan.",
    "Repeat exam unchanged prior to discharge.",
    "Patient counseled on medication side effects.",
    "Will update the primary care physician via the EHR.",
]
DISPOS = [
    "Discharged home in stable condition with return precautions.",
    "Admitted to medicine for further management.", "Admitted to telemetry.",
    "Discharged home with family.", "Transferred to the ICU.",
    "Placed in observation.", "Discharged to skilled nursing facility.",
    "Left against medical advice after discussion of risks.",
]
STREETS = ["Maple", "Oak", "Elm", "Cedar", "Pine", "Washington", "Lincoln", "Park", "Lake",
           "Hill", "Sunset", "Highland", "Church", "Mill", "River", "Chestnut", "Walnut", "Ridge",
           "Meadow", "Forest", "Prospect", "Union", "Spruce", "Willow", "Harbor", "Orchard"]
SUFFIXES = ["Street", "St", "Avenue", "Ave", "Road", "Rd", "Drive", "Dr", "Lane", "Ln", "Court",
            "Way", "Boulevard", "Blvd", "Place"]
CITIES = ["Springfield", "Riverton", "Fairview", "Greenville", "Madison", "Georgetown", "Salem",
          "Ashland", "Milford", "Dover", "Oakdale", "Brookfield", "Lakewood", "Centerville",
          "Westbury", "Hillsboro", "Northfield", "Cedar Falls", "Bridgeport", "Kingston"]
STATES = ["IL", "MA", "OH", "TX", "CA", "NY", "PA", "GA", "NC", "MI", "WA", "AZ", "Ohio",
          "Texas", "Massachusetts", "Oregon", "Virginia", "Georgia"]
EMAIL_DOMAINS = ["gmail.com", "yahoo.com", "outlook.com", "icloud.com", "example.org",
                 "comcast.net"]
SYLLABLES = (["val", "kes", "dor", "mir", "tal", "bren", "quin", "zar", "lom", "fen", "hald",
              "cor", "vin", "ost", "rav", "pell", "ward", "thes", "gar", "lun"],
             ["a", "e", "i", "o", "ar", "en", "is", "or", "el"],
             ["rro", "lin", "ski", "ton", "dez", "vich", "man", "sen", "ard", "quist", "holm"])
# fmt: on


# =============================================================================================
# Generation
# =============================================================================================
@dataclass
class Ident:
    type: str  # NAME, PHONE, MRN, DATE, EMAIL, SSN, ADDRESS, CITY, ZIP
    form: str  # sub-format, e.g. "PHONE/(ddd) ddd-dddd", "NAME/honorific"
    value: str


@dataclass
class Patient:
    pid: str
    first: str
    last: str
    sex: str  # "male" | "female"
    age: int
    phone: str
    phone_form: str
    street: str
    city: str
    state: str
    zip: str
    email: str
    ssn: str
    ssn_form: str
    mrn_line: str
    mrn: str
    dob: str

    @property
    def name(self) -> str:
        return f"{self.first} {self.last}"


@dataclass
class NoteDraft:
    """A note as lines; marks name lines that copy-forward edits change."""

    lines: list[str]
    marks: dict[str, int]
    idents: list[Ident]
    header_lines: list[tuple[int, int]] = field(default_factory=list)  # (line, header length)

    def text(self) -> str:
        return "\n".join(self.lines)


def _oxford(items: list[str], conj: str = "and") -> str:
    if len(items) <= 1:
        return "".join(items)
    if len(items) == 2:
        return f"{items[0]} {conj} {items[1]}"
    return ", ".join(items[:-1]) + f", {conj} " + items[-1]


def _pick(rng: random.Random, pool: list[str], lo: int, hi: int) -> list[str]:
    k = min(len(pool), rng.randint(lo, hi))
    return rng.sample(pool, k)


def _fill(rng: random.Random, s: str, prof: dict[str, list[str]] | None = None) -> str:
    if "{" not in s:
        return s
    vals = {
        "n": rng.randint(2, 9),
        "s": rng.randint(1, 7),
        "s0": rng.randint(0, 2),
        "mm": rng.randint(3, 12),
        "h": rng.randint(1, 6),
        "t": f"{rng.uniform(100.4, 103.5):.1f}",
        "hr": rng.randint(52, 148),
        "qtc": rng.randint(390, 490),
        "bnp": rng.randint(300, 2600),
        "lip": rng.randint(400, 2500),
        "lac": f"{rng.uniform(2.1, 4.8):.1f}",
        "wbc": rng.choice(["10-20", "20-50", ">50"]),
        "cr": f"{rng.uniform(1.3, 2.4):.1f}",
        "ag": rng.randint(14, 28),
        "bhb": f"{rng.uniform(0.4, 6.0):.1f}",
        "glu": rng.randint(140, 260),
        "trend": rng.choice(["flat", "negative x2", "uptrending", "below the 99th percentile"]),
        "posneg": rng.choice(["positive", "negative"]),
        "hhmm": f"{rng.randint(0, 23):02d}:{rng.choice(['00', '15', '30', '45'])}",
        "otc": rng.choice(OTC),
        "consultant": rng.choice(CONSULTANTS),
        "treat": rng.choice(prof["treat"]) if prof else "fluids",
        "test": rng.choice(["repeat troponin", "CT results", "urine culture", "a PO challenge"]),
    }
    return s.format(**vals)


def _num(rng: random.Random, lo: float, hi: float, dec: int) -> str:
    v = rng.uniform(lo, hi)
    return f"{v:.{dec}f}" if dec else str(round(v))


def _vitals(rng: random.Random, style: int) -> str:
    t = f"{rng.uniform(97.0, 101.8):.1f}"
    hr, rr = rng.randint(56, 132), rng.randint(12, 26)
    sbp, dbp, o2 = rng.randint(96, 182), rng.randint(54, 104), rng.randint(89, 100)
    if style == 0:
        return f"Vitals: T {t} F, HR {hr}, BP {sbp}/{dbp}, RR {rr}, SpO2 {o2}% on room air"
    if style == 1:
        return f"Vitals: BP {sbp}/{dbp} | HR {hr} | RR {rr} | Temp {t} | SpO2 {o2}% RA"
    return f"Triage vitals: temp {t}, pulse {hr}, BP {sbp}/{dbp}, resp {rr}, sat {o2}% on RA"


def _lab_line(rng: random.Random, key: str) -> str:
    if key in LABS:
        sep = rng.choice([" ", ": ", " "])
        parts = []
        for name, lo, hi, dec, unit in LABS[key]:
            v = _num(rng, lo, hi, dec)
            parts.append(f"{name}{sep}{v}" + (f" {unit}" if unit and rng.random() < 0.3 else ""))
        return ", ".join(parts)
    name, results = QUAL_TESTS[key]
    return f"{name}: {_fill(rng, rng.choice(results))}"


def _header(rng: random.Random, kind: str) -> str:
    return rng.choice(HEADERS[kind])


class NoteFactory:
    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self._vocab_words = self._vocabulary_words()
        self._first_m, self._first_f, self._last = self._name_pools()

    # ------------------------------------------------------------------ names
    @staticmethod
    def _vocabulary_words() -> set[str]:
        words: set[str] = set()
        pools: list[Any] = [PMH, MEDS, ALLERGIES, TOBACCO, ALCOHOL, DRUGS, LIVING, JOBS]
        pools += [CONSULTANTS, COURSE_EVENTS, CONTEXT, OTC, ADDENDA, DISPOS, STREETS, CITIES]
        pools += [STATES, list(HEADERS.values()), list(ROS_SYSTEMS.items())]
        pools += [list(EXAM.items()), PROFILES, list(IMAGING.values()), list(QUAL_TESTS.values())]
        pools += [list(LABS.items())]
        words.update(w.lower() for w in re.findall(r"[A-Za-z]+", json.dumps(pools)))
        return words

    def _name_pools(self) -> tuple[list[str], list[str], list[str]]:
        try:
            from importlib.resources import files

            pkg = files("names")

            def read(fname: str, n: int) -> list[str]:
                lines = pkg.joinpath(fname).read_text(encoding="utf-8").splitlines()[:n]
                return [ln.split()[0].capitalize() for ln in lines if ln.strip()]

            male, female = read("dist.male.first", 500), read("dist.female.first", 800)
            last = read("dist.all.last", 8000)
        except (ImportError, OSError):  # pragma: no cover - names is a clinitune dependency
            male = ["James", "John", "Robert", "Michael", "David", "Daniel", "Kevin", "Brian"]
            female = ["Mary", "Patricia", "Linda", "Barbara", "Susan", "Karen", "Nancy", "Donna"]
            last = ["Smith", "Johnson", "Garcia", "Miller", "Davis", "Rodriguez", "Wilson"]
        stop = self._vocab_words | {c.lower() for c in CITIES}

        def ok(n: str) -> bool:
            return len(n) >= 3 and n.lower() not in stop and n.isalpha()

        return [n for n in male if ok(n)], [n for n in female if ok(n)], [n for n in last if ok(n)]

    def _rare_surname(self) -> str:
        a, b, c = SYLLABLES
        r = self.rng
        return (r.choice(a) + r.choice(b) + r.choice(c)).capitalize()

    def patient(self, idx: int) -> Patient:
        r = self.rng
        sex = r.choice(["male", "female"])
        first = r.choice(self._first_m if sex == "male" else self._first_f)
        last = self._rare_surname() if r.random() < 0.2 else r.choice(self._last)
        area = f"{r.randint(2, 9)}{r.randint(0, 9)}{r.randint(0, 9)}"
        exch, line = f"{r.randint(200, 999)}", f"{r.randint(0, 9999):04d}"
        forms = [
            ("(ddd) ddd-dddd", f"({area}) {exch}-{line}"),
            ("ddd-ddd-dddd", f"{area}-{exch}-{line}"),
            ("ddd.ddd.dddd", f"{area}.{exch}.{line}"),
            ("+1 ddd ddd dddd", f"+1 {area} {exch} {line}"),
            ("ddd ddd dddd", f"{area} {exch} {line}"),
        ]
        phone_form, phone = r.choices(forms, weights=[4, 4, 2, 1, 1])[0]
        street = f"{r.randint(1, 9899)} {r.choice(STREETS)} {r.choice(SUFFIXES)}"
        if r.random() < 0.2:
            street += f", Apt {r.randint(1, 40)}{r.choice('ABCD')}"
        ssn_digits = (r.randint(1, 665), r.randint(1, 99), r.randint(1, 9999))
        ssn_forms = [
            ("ddd-dd-dddd", "{:03d}-{:02d}-{:04d}"),
            ("ddddddddd after label", "{:03d}{:02d}{:04d}"),
        ]
        ssn_form, ssn_fmt = r.choice(ssn_forms)
        mrn_digits = f"{r.randint(10**6, 10**8 - 1):08d}"
        mrn_forms = [
            ("MRN: dddddddd", "MRN: {m}", mrn_digits),
            ("MRN dddddddd", "MRN {m}", mrn_digits),
            ("Medical Record Number: dddddddd", "Medical Record Number: {m}", mrn_digits),
            ("MR#: Adddddddd", "MR#: {m}", "E" + mrn_digits),
        ]
        _, mrn_tpl, mrn = r.choice(mrn_forms)
        age = r.randint(18, 89)
        dob = self._date(r.randint(1935, 2006), style=r.randint(0, 4))
        email = f"{first[0].lower()}{last.lower()}{r.randint(1, 99)}@{r.choice(EMAIL_DOMAINS)}"
        return Patient(
            pid=f"P{idx:07d}",
            first=first,
            last=last,
            sex=sex,
            age=age,
            phone=phone,
            phone_form=phone_form,
            street=street,
            city=r.choice(CITIES),
            state=r.choice(STATES),
            zip=f"{r.randint(1001, 99950):05d}",
            email=email,
            ssn=ssn_fmt.format(*ssn_digits),
            ssn_form=ssn_form,
            mrn_line=mrn_tpl.format(m=mrn),
            mrn=mrn,
            dob=dob[1],
        )

    MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August",
              "September", "October", "November", "December")  # fmt: skip

    def _date(self, year: int, style: int) -> tuple[str, str]:
        r = self.rng
        m, d = r.randint(1, 12), r.randint(1, 28)
        mon = self.MONTHS[m - 1]
        forms = [
            ("mm/dd/yyyy", f"{m:02d}/{d:02d}/{year}"),
            ("m/d/yy", f"{m}/{d}/{year % 100:02d}"),
            ("Month d, yyyy", f"{mon} {d}, {year}"),
            ("yyyy-mm-dd", f"{year}-{m:02d}-{d:02d}"),
            ("d Mon yyyy", f"{d} {mon[:3]} {year}"),
        ]
        return forms[style]

    # ------------------------------------------------------------------ note
    def note(self, p: Patient, phi: bool) -> NoteDraft:
        r = self.rng
        prof = r.choice(PROFILES)
        lines: list[str] = []
        marks: dict[str, int] = {}
        idents: list[Ident] = []
        headers: list[tuple[int, int]] = []  # (line, header length)
        age = max(18, min(89, p.age + r.randint(-2, 2)))
        sexw = r.choice([p.sex, "M" if p.sex == "male" else "F"])
        pron = "He" if p.sex == "male" else "She"
        cc = r.choice(prof["cc"])
        hon = r.choice(["Mr."] if p.sex == "male" else ["Ms.", "Mrs."])

        # Which identifier slots this note gets.
        slots: set[str] = set()
        if phi:
            pool = ["label", "intro", "honorific", "mrn", "dob", "visit_date", "phone", "email",
                    "ssn", "address", "bare_last", "first_only"]  # fmt: skip
            weights = [3, 4, 4, 3, 3, 3, 3, 1, 1, 2, 1, 1]
            while len(slots) < r.randint(1, 4):
                slots.add(r.choices(pool, weights=weights)[0])

        def header(kind: str, body: str | None = None) -> None:
            h = _header(r, kind)
            headers.append((len(lines), len(h)))
            if body is not None and h.endswith(":") and r.random() < 0.6:
                lines.append(f"{h} {body}")  # inline header
                return
            lines.append(h)
            if body is not None:
                lines.append(body)

        # --- preamble
        pre: list[str] = []
        if r.random() < 0.5 or slots & {"label", "mrn", "dob", "ssn"}:
            pre.append(
                r.choice(
                    [
                        "EMERGENCY DEPARTMENT PROVIDER NOTE",
                        "ED Physician Note",
                        "Emergency Medicine Attending Note",
                        "ED PROVIDER DOCUMENTATION",
                    ]
                )
            )
        if "label" in slots:
            form = r.randint(0, 2)
            if form == 0:
                pre.append(f"Patient: {p.last}, {p.first}")
            elif form == 1:
                pre.append(f"Name: {p.first} {p.last}")
            else:
                pre.append(f"Patient Name: {p.first} {p.last}")
            idents += [Ident("NAME", "NAME/label", p.first), Ident("NAME", "NAME/label", p.last)]
        if "mrn" in slots:
            pre.append(p.mrn_line)
            idents.append(Ident("MRN", "MRN/" + p.mrn_line.split(p.mrn)[0].strip(), p.mrn))
        if "dob" in slots:
            pre.append(f"DOB: {p.dob}")
            idents.append(Ident("DATE", "DATE/DOB " + self._date_form(p.dob), p.dob))
        if "ssn" in slots:
            lab = r.choice(["SSN:", "SSN", "Social security number:"])
            pre.append(f"{lab} {p.ssn}")
            idents.append(Ident("SSN", "SSN/" + p.ssn_form, p.ssn))
        if pre and r.random() < 0.5:
            pre.append(
                f"Arrival: {_fill(r, '{hhmm}')} via "
                f"{r.choice(['EMS', 'private vehicle', 'walk-in'])}"
            )
        lines += pre

        # --- chief complaint
        header("cc", cc[0].upper() + cc[1:])

        # --- HPI
        if "intro" in slots:
            subj = f"{p.first} {p.last}"
            idents += [Ident("NAME", "NAME/intro", p.first), Ident("NAME", "NAME/intro", p.last)]
        else:
            subj = r.choice(["Patient", "Pt", "This patient", "The patient"])
        pmh = _pick(r, PMH, 0, 4)
        hist = f" with a history of {_oxford(pmh)}" if pmh else " with no significant history"
        dur = r.choice(
            [
                f"for {r.randint(2, 11)} hours",
                f"for {r.randint(2, 6)} days",
                "since this morning",
                "since last night",
                f"x {r.randint(1, 3)} weeks",
            ]
        )
        opening = r.choice([
            f"{subj} is a {age}-year-old {sexw}{hist} who presents with {cc} {dur}.",
            f"{subj} is a {age} y.o. {sexw}{hist}, presenting to the ED for {cc} that began {dur}.",
            f"{subj} is a {age} yo {sexw}{hist} here with {cc} {dur}.",
        ])  # fmt: skip
        sents = [opening]
        sym = "pain" if "pain" in cc else "symptoms"
        sents.append(r.choice([
            f"{pron} describes the {sym} as {r.choice(prof['quality'])}, "
            f"{r.choice(prof['where'])}, "
            f"{_fill(r, r.choice(prof['rad']), prof)}.",
            f"The {sym} is {r.choice(prof['quality'])} and {r.choice(prof['where'])}, "
            f"{_fill(r, r.choice(prof['rad']), prof)}, rated {r.randint(3, 10)}/10.",
            f"Reports {r.choice(prof['quality'])} {sym}, {r.choice(prof['where'])}; "
            f"{_fill(r, r.choice(prof['rad']), prof)}.",
        ]))  # fmt: skip
        sents.append(r.choice([
            f"Worse with {r.choice(prof['agg'])}, better with {r.choice(prof['rel'])}.",
            f"It is aggravated by {r.choice(prof['agg'])} and relieved by {r.choice(prof['rel'])}.",
            f"Exacerbated by {r.choice(prof['agg'])}; {r.choice(prof['rel'])} helps somewhat.",
        ]))  # fmt: skip
        sents.append(
            r.choice(["Endorses ", "Associated with ", "Also reports "])
            + _oxford(_pick(r, prof["assoc"], 1, 3))
            + "."
        )
        sents.append(
            r.choice(["Denies ", "No ", "Negative for "])
            + _oxford(_pick(r, prof["neg"], 2, 4), "or")
            + "."
        )
        for c in _pick(r, CONTEXT, 1, 3):
            sents.append(_fill(r, c, prof))
        if "honorific" in slots:
            sents.insert(r.randint(1, len(sents)), r.choice([
                f"{hon} {p.last} states the symptoms are worse than prior episodes.",
                f"{hon} {p.last} is accompanied by family.",
                f"Per {hon} {p.last}, the symptoms woke "
                f"{'him' if p.sex == 'male' else 'her'} from sleep.",
            ]))  # fmt: skip
            idents.append(Ident("NAME", "NAME/honorific", p.last))
        if "first_only" in slots:
            sents.insert(
                r.randint(1, len(sents)), f"{p.first} says this feels different from usual."
            )
            idents.append(Ident("NAME", "NAME/first-only", p.first))
        if "visit_date" in slots:
            style = r.randint(0, 4)
            form, d = self._date(r.randint(2015, 2024), style)
            sents.append(
                r.choice(
                    [
                        f"Previously seen in this ED on {d} for a similar complaint.",
                        f"Last admission was on {d}.",
                        f"Had a normal stress test on {d}.",
                    ]
                )
            )
            idents.append(Ident("DATE", "DATE/" + form, d))
        header("hpi")
        marks["hpi"] = len(lines)
        lines.append(" ".join(sents))

        # --- ROS
        if r.random() < 0.8:
            items = []
            for system in r.sample(list(ROS_SYSTEMS), r.randint(4, 8)):
                neg = _pick(r, ROS_SYSTEMS[system], 1, 3)
                items.append(
                    r.choice(
                        [
                            f"{system}: negative for {_oxford(neg, 'or')}.",
                            f"{system}: denies {_oxford(neg, 'or')}.",
                            f"{system}: no {', '.join(neg)}.",
                        ]
                    )
                )
            if r.random() < 0.5:
                items.append(
                    r.choice(
                        [
                            "All other systems reviewed and negative.",
                            "10-point ROS otherwise negative.",
                            "Remainder of ROS negative except as in HPI.",
                        ]
                    )
                )
            header("ros")
            lines += items if r.random() < 0.5 else [" ".join(items)]

        # --- PMH / meds / allergies
        if r.random() < 0.85:
            header("pmh", _oxford(pmh) if pmh else "None")
            header("meds", "; ".join(_pick(r, MEDS, 1, 5)) if pmh else "None")
            header("allergies", r.choice(ALLERGIES))

        # --- social history (address / phone / email can go here)
        if r.random() < 0.7 or slots & {"address", "email"}:
            soc = [
                _fill(r, r.choice(TOBACCO)).capitalize() + ".",
                _fill(r, r.choice(ALCOHOL)).capitalize() + ".",
                r.choice(DRUGS).capitalize() + ".",
            ]
            living = r.choice(LIVING)
            if "address" in slots:
                soc.append(f"{living.capitalize()} at {p.street}, {p.city}, {p.state} {p.zip}.")
                street_form = "ADDRESS/with unit" if "Apt" in p.street else "ADDRESS/street"
                idents += [
                    Ident("ADDRESS", street_form, p.street.split(", Apt")[0]),
                    Ident("CITY", "CITY/before state", p.city),
                    Ident("ZIP", "ZIP/after " + ("abbr" if len(p.state) == 2 else "name"), p.zip),
                ]
                if "Apt" in p.street:
                    idents.append(Ident("ADDRESS", "ADDRESS/unit", p.street.split(", ")[1]))
            else:
                soc.append(living.capitalize() + ".")
            soc.append(f"Works as a {r.choice(JOBS)}." if r.random() < 0.6 else "Retired.")
            if "email" in slots:
                soc.append(f"Prefers e-mail contact at {p.email}.")
                idents.append(Ident("EMAIL", "EMAIL/plain", p.email))
            header("social", " ".join(soc))

        # --- physical exam with vitals
        header("pe")
        style = r.randint(0, 2)
        marks["vitals"] = len(lines)
        marks["vitals_style"] = style
        lines.append(_vitals(r, style))
        abn = dict(x.split(": ", 1) for x in _pick(r, prof["exam"], 1, 2))
        systems = [s for s in EXAM if r.random() < 0.75 or s in abn]
        for s in [s for s in EXAM if s in systems or s in abn]:
            body = _fill(r, abn[s]) if s in abn else r.choice(EXAM[s])
            lines.append(f"{s}: {body}")
        for s in [s for s in abn if s not in EXAM]:
            lines.append(f"{s}: {_fill(r, abn[s])}")

        # --- results / imaging
        tests = [t for t in prof["tests"] if r.random() < 0.8]
        labs = [t for t in tests if t in LABS or t in QUAL_TESTS]
        imgs = [t for t in tests if t in IMAGING]
        if labs:
            header("results")
            marks["labs"] = len(lines)
            for t in labs:
                lines.append(_lab_line(r, t))
        if imgs:
            if not labs or r.random() < 0.5:
                header("imaging")
            for t in imgs:
                name, res = IMAGING[t]
                lines.append(f"{name}: {_fill(r, r.choice(res))}")

        # --- ED course, MDM, A/P
        combined = r.random() < 0.2
        events = []
        for _ in range(r.randint(2, 4)):
            ev = _fill(r, r.choice(COURSE_EVENTS), prof)
            events.append(f"{_fill(r, '{hhmm}')} {ev}" if r.random() < 0.5 else ev)
        ddx = _pick(r, prof["ddx"], 3, 5)
        mdm = [r.choice([
            f"{age} y/o {sexw} presenting with {cc}.",
            f"This is a {age}-year-old {sexw} here for {cc}.",
            f"In summary, {age}-year-old {sexw} with {cc}.",
        ]), r.choice(["Differential diagnosis includes ", "DDx considered: ", "Considered "])
            + _oxford(ddx) + "."]  # fmt: skip
        mdm += [_fill(r, s) for s in _pick(r, prof["reason"], 1, 3)]
        mdm.append(r.choice([
            f"Overall presentation is most consistent with {ddx[0]}.",
            f"Doubt {ddx[-1]} given the exam and workup.",
            f"Risk of {ddx[1]} felt to be {r.choice(['low', 'moderate', 'high'])}.",
        ]))  # fmt: skip
        if "honorific" in slots and r.random() < 0.5:
            mdm.append(f"Plan discussed with {hon} {p.last}, who agrees.")
        if "bare_last" in slots:
            mdm.append(f"{p.last} was updated on the results and agrees with the plan.")
            idents.append(Ident("NAME", "NAME/bare-last", p.last))
        if combined:
            header("course_mdm")
            marks["course"] = len(lines)
            lines.append(" ".join(events))
            lines.append(" ".join(mdm))
        else:
            if r.random() < 0.6:
                header("course")
                marks["course"] = len(lines)
                lines += events
            if r.random() < 0.75:
                header("mdm")
                lines.append(" ".join(mdm))
                marks.setdefault("course", len(lines) - 1)
            else:
                marks.setdefault("course", len(lines) - 1)
                mdm = []
        if not mdm or r.random() < 0.5:
            header("ap")
            dxs = _pick(r, prof["dx"], 1, 2)
            plans = _pick(r, prof["plan"], 2, 4)
            ap = [f"1. {dxs[0]}: {'; '.join(plans)}."]
            if len(dxs) > 1:
                ap.append(f"2. {dxs[1]}: as above.")
            if pmh:
                ap.append(
                    f"{len(ap) + 1}. {pmh[0][0].upper() + pmh[0][1:]}: continue home regimen."
                )
            lines += ap
        elif r.random() < 0.6:
            header("dx", r.choice(prof["dx"]))

        # --- disposition
        if r.random() < 0.85 or "phone" in slots:
            dispo = [r.choice(DISPOS)]
            dispo.append(r.choice([
                f"Follow up with PCP in {r.randint(2, 7)} days.",
                f"Follow up with {r.choice(CONSULTANTS)} this week.",
                "Strict return precautions given.",
            ]))  # fmt: skip
            if "phone" in slots:
                who = r.choice(["Daughter", "Son", "Spouse", "Patient"])
                dispo.append(
                    r.choice(
                        [
                            f"{who} can be reached at {p.phone}.",
                            f"Callback number {p.phone}.",
                            f"Contact: {p.phone} ({who.lower()}).",
                        ]
                    )
                )
                idents.append(Ident("PHONE", "PHONE/" + p.phone_form, p.phone))
            header("dispo", " ".join(dispo))
        marks["end"] = len(lines)
        return NoteDraft(lines, marks, idents, headers)

    def _date_form(self, d: str) -> str:
        if re.fullmatch(r"\d{2}/\d{2}/\d{4}", d):
            return "mm/dd/yyyy"
        if re.fullmatch(r"\d{1,2}/\d{1,2}/\d{2}", d):
            return "m/d/yy"
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", d):
            return "yyyy-mm-dd"
        if re.fullmatch(r"\d{1,2} [A-Z][a-z]{2} \d{4}", d):
            return "d Mon yyyy"
        return "Month d, yyyy"

    # ------------------------------------------------------------------ copies
    def exact_copy(self, d: NoteDraft) -> tuple[str, str]:
        """Same note, as another export row: sometimes whitespace / header case changed."""
        r = self.rng
        kind = r.choices(["identical", "whitespace", "crlf", "header_case"], [2, 1, 1, 1])[0]
        text = d.text()
        if kind == "whitespace":
            text = "\n".join(ln.replace(". ", ".  ") + "  " for ln in d.lines) + "\n\n"
        elif kind == "crlf":
            text = text.replace("\n", "\r\n")
        elif kind == "header_case" and d.header_lines:
            lines = list(d.lines)
            i, n = r.choice(d.header_lines)
            h = lines[i][:n]  # the header only, never an inline body (identifiers live there)
            lines[i] = (h.upper() if h != h.upper() else h.title()) + lines[i][n:]
            text = "\n".join(lines)
        return kind, text

    def near_copy(self, d: NoteDraft, prof_seed: int) -> tuple[str, str]:
        """Copy-forward: one or two contiguous edits."""
        r = self.rng
        lines = list(d.lines)
        kinds = ["vitals", "append_plan", "insert_course", "delete_sentence", "labs"]
        n_edits = 1 if r.random() < 0.75 else 2
        chosen = r.sample(kinds, n_edits)
        # Apply from the bottom of the note up so marked line numbers stay valid.
        order = sorted(chosen, key=lambda k: -self._edit_pos(d, k))
        for k in order:
            if k == "vitals":
                lines[d.marks["vitals"]] = _vitals(r, d.marks["vitals_style"])
            elif k == "labs" and "labs" in d.marks:
                i = d.marks["labs"]
                prefix = lines[i].split()[0].rstrip(":")
                key = next((k2 for k2, v in LABS.items() if v[0][0] == prefix), None)
                lines[i] = _lab_line(r, key) if key else lines[i] + " (repeat pending)"
            elif k == "labs" or k == "append_plan":
                add = " ".join(r.sample(ADDENDA, r.randint(1, 2)))
                lines.insert(d.marks["end"], add)
            elif k == "insert_course":
                ev = _fill(r, r.choice(COURSE_EVENTS), r.choice(PROFILES))
                lines.insert(d.marks["course"] + 1, f"{_fill(r, '{hhmm}')} {ev}")
            elif k == "delete_sentence":
                sents = _SENTENCE_END.split(lines[d.marks["hpi"]])
                if len(sents) > 3:
                    del sents[r.randint(2, len(sents) - 2)]
                lines[d.marks["hpi"]] = " ".join(sents)
        return "+".join(chosen), "\n".join(lines)

    @staticmethod
    def _edit_pos(d: NoteDraft, kind: str) -> int:
        return {
            "vitals": d.marks["vitals"],
            "labs": d.marks.get("labs", d.marks["end"]),
            "append_plan": d.marks["end"],
            "insert_course": d.marks["course"] + 1,
            "delete_sentence": d.marks["hpi"],
        }[kind]


_SENTENCE_END = re.compile(r"(?<!Mr\.)(?<!Ms\.)(?<!Mrs\.)(?<=\.) (?=[A-Z0-9])")


# =============================================================================================
# Ground truth
# =============================================================================================
def shingles(text: str, k: int = SHINGLE) -> set[str]:
    from clinitune.data.dedup import normalize

    toks = normalize(text).split(" ")
    if len(toks) < k:
        return {" ".join(toks)}
    return {" ".join(toks[i : i + k]) for i in range(len(toks) - k + 1)}


def jaccard(a: set[str], b: set[str]) -> float:
    return len(a & b) / len(a | b) if (a or b) else 1.0


@dataclass
class Dataset:
    rows: list[dict[str, str]]  # note_id, patient_id, patient_name, text
    groups: dict[str, str]  # note_id -> group id (the original note's id)
    pairs: list[dict[str, Any]]  # planted duplicate pairs
    idents: dict[str, list[Ident]]  # note_id -> planted identifiers present in its text
    stats: dict[str, Any]


def generate(n: int, seed: int, dup_frac: float = 0.05, near_frac: float = 0.05) -> Dataset:
    from clinitune.data.dedup import normalize

    fac = NoteFactory(seed)
    r = fac.rng
    n_exact, n_near = round(n * dup_frac), round(n * near_frac)
    n_orig = n - n_exact - n_near
    drafts: list[tuple[Patient, NoteDraft]] = []
    pid = 0
    while len(drafts) < n_orig:
        p = fac.patient(pid)
        pid += 1
        for _ in range(min(r.choice([1, 1, 2, 2, 3, 3, 4, 5, 6, 8]), n_orig - len(drafts))):
            drafts.append((p, fac.note(p, phi=r.random() < 0.35)))
    # (text, patient, group index, kind, detail)
    items: list[tuple[str, Patient, int, str, str]] = [
        (d.text(), p, i, "original", "") for i, (p, d) in enumerate(drafts)
    ]
    bases = r.sample(range(n_orig), n_exact + n_near)
    pair_meta: list[tuple[int, int, str, str, float]] = []  # (base, copy item, kind, detail, J)
    for b in bases[:n_exact]:
        p, d = drafts[b]
        detail, text = fac.exact_copy(d)
        items.append((text, p, b, "exact", detail))
        pair_meta.append((b, len(items) - 1, "exact", detail, 1.0))
    for b in bases[n_exact:]:
        p, d = drafts[b]
        base_norm = normalize(items[b][0])
        base_sh = shingles(items[b][0])
        for _attempt in range(20):
            detail, text = fac.near_copy(d, b)
            if normalize(text) == base_norm:
                continue
            j = jaccard(base_sh, shingles(text))
            if 0.85 <= j < 1.0:
                break
        else:  # pragma: no cover - edits are small; never seen
            raise RuntimeError("could not plant a near duplicate with Jaccard >= 0.85")
        items.append((text, p, b, "near", detail))
        pair_meta.append((b, len(items) - 1, "near", detail, j))

    order = list(range(len(items)))
    r.shuffle(order)
    note_id = {item: f"ED{pos:07d}" for pos, item in enumerate(order)}
    rows, groups, idents = [], {}, {}
    for item in order:
        text, p, g, _kind, _ = items[item]
        nid = note_id[item]
        rows.append({"note_id": nid, "patient_id": p.pid, "patient_name": p.name, "text": text})
        groups[nid] = note_id[g]
        # One entry per (type, value): a value planted in several forms ("Patient: Smith, John"
        # and "Mr. Smith") leaks if any occurrence is left, so its form is the combination.
        forms: dict[tuple[str, str], set[str]] = defaultdict(set)
        for i in drafts[g][1].idents:
            if i.value in text:  # a deleted HPI sentence may have taken it out of a copy
                forms[(i.type, i.value)].add(i.form.split("/", 1)[1])
        if forms:
            idents[nid] = [
                Ident(t, f"{t}/{'+'.join(sorted(fs))}", v) for (t, v), fs in forms.items()
            ]
    pairs = [
        {
            "a": note_id[b],
            "b": note_id[c],
            "kind": kind,
            "edit": detail,
            "jaccard": round(j, 4),
        }
        for b, c, kind, detail, j in pair_meta
    ]
    stats = {
        "notes": len(rows),
        "patients": len({row["patient_id"] for row in rows}),
        "originals": n_orig,
        "exact_pairs": n_exact,
        "near_pairs": n_near,
        "notes_with_identifiers": len(idents),
        "identifiers": sum(len(v) for v in idents.values()),
        "mean_chars": round(statistics.fmean(len(row["text"]) for row in rows)),
    }
    return Dataset(rows, groups, pairs, idents, stats)


def unrelated_similarity(ds: Dataset, seed: int, n_pairs: int = 2000) -> dict[str, Any]:
    """Word-5-gram Jaccard between notes of different groups: random pairs and pairs of the same
    patient (which share identifiers and history lines)."""
    r = random.Random(seed + 1)
    rows = ds.rows
    cache: dict[int, set[str]] = {}

    def sh(i: int) -> set[str]:
        if i not in cache:
            cache[i] = shingles(rows[i]["text"])
        return cache[i]

    def summary(vals: list[float]) -> dict[str, float]:
        vals = sorted(vals)
        if not vals:
            return {}
        return {
            "pairs": len(vals),
            "mean": round(statistics.fmean(vals), 4),
            "p99": round(vals[min(len(vals) - 1, int(0.99 * len(vals)))], 4),
            "max": round(vals[-1], 4),
        }

    rand: list[float] = []
    while len(rand) < n_pairs:
        i, j = r.randrange(len(rows)), r.randrange(len(rows))
        if ds.groups[rows[i]["note_id"]] != ds.groups[rows[j]["note_id"]]:
            rand.append(jaccard(sh(i), sh(j)))
    by_patient: dict[str, list[int]] = defaultdict(list)
    for i, row in enumerate(rows):
        by_patient[row["patient_id"]].append(i)
    same: list[float] = []
    multi = [v for v in by_patient.values() if len(v) > 1]
    r.shuffle(multi)
    for idxs in multi:
        i, j = r.sample(idxs, 2)
        if ds.groups[rows[i]["note_id"]] != ds.groups[rows[j]["note_id"]]:
            same.append(jaccard(sh(i), sh(j)))
        if len(same) >= n_pairs // 2:
            break
    return {"random_pairs": summary(rand), "same_patient_pairs": summary(same)}


def redacted_pair_jaccard(ds: Dataset) -> dict[tuple[str, str], float]:
    """True Jaccard of each near pair after the PHI gate's redaction (what prepare dedups)."""
    from clinitune.data.phi import PhiScanner, redact

    scanner = PhiScanner()
    by_id = {row["note_id"]: row for row in ds.rows}
    out = {}
    for p in ds.pairs:
        if p["kind"] != "near":
            continue
        texts = []
        for nid in (p["a"], p["b"]):
            row = by_id[nid]
            texts.append(redact(row["text"], scanner.scan(row["text"], [row["patient_name"]])))
        out[(p["a"], p["b"])] = round(jaccard(shingles(texts[0]), shingles(texts[1])), 4)
    return out


def write_dataset(ds: Dataset, d: Path) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    path = d / "notes.csv"
    with open(path, "w", encoding="utf-8", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["note_id", "patient_id", "patient_name", "text"])
        w.writeheader()
        w.writerows(ds.rows)
    truth = {
        "stats": ds.stats,
        "pairs": ds.pairs,
        "identifiers": {
            k: [{"type": i.type, "form": i.form, "value": i.value} for i in v]
            for k, v in ds.idents.items()
        },
    }
    (d / "truth.json").write_text(json.dumps(truth, indent=1), encoding="utf-8")
    return path


# =============================================================================================
# The prepare run
# =============================================================================================
def workers_supported() -> bool:
    """Whether the installed recipe schema has ``data.workers`` (being added in parallel)."""
    from clinitune.recipe import DataSpec

    return "workers" in DataSpec.model_fields


def write_recipe(d: Path, csv_path: Path, args: argparse.Namespace) -> Path:
    import yaml

    recipe = {
        "name": f"prepare_bench_{d.name}",
        "seed": 0,
        "model": {"name": MODEL},
        "data": {
            "sources": [
                {
                    "name": "ed",
                    "path": csv_path.name,
                    "columns": {
                        "note_id": "note_id",
                        "patient_id": "patient_id",
                        "text": "text",
                        "meta": {"patient_name": "patient_name"},
                    },
                    "tasks": [f"ed_{t}" for t in args.tasks.split("+")],
                }
            ],
            "tasks": {f"ed_{t}": {"type": t} for t in args.tasks.split("+")},
            "phi": {"policy": "redact", "name_fields": ["patient_name"]},
            "dedup": {
                "threshold": args.threshold,
                "shingle": args.shingle,
                "num_perm": args.num_perm,
            },
            "split": {"valid": 0.1, "test": 0.1},
            "max_seq_len": 1024,
        },
    }
    path = d / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False), encoding="utf-8")
    return path


@dataclass
class Measured:
    rc: int
    wall_s: float
    cpu_s: float
    maxrss_kb: int  # wait4 rusage of the child: its largest process (reaped descendants incl.)
    tree_rss_kb: int | None  # sampled sum over the child's process tree (psutil), if available
    other_cpu_cores: float | None  # CPU used by everything else on the machine meanwhile (cores)


# A minimal launcher between this (large: it holds the notes) process and the measured child. A
# child's ru_maxrss starts from the RSS of the process it was forked from (Linux records the old
# mm's high-water mark at exec), so forking the child from here would floor its "peak RSS" at
# this process's size; posix_spawn from a ~10 MB `python -S` keeps it honest.
_LAUNCHER = """
import json, os, sys
out, cmd = sys.argv[1], sys.argv[2:]
pid = os.posix_spawn(cmd[0], cmd, os.environ)
_, status, ru = os.wait4(pid, 0)
with open(out, "w") as f:
    json.dump({"maxrss_kb": ru.ru_maxrss, "cpu_s": ru.ru_utime + ru.ru_stime}, f)
code = os.waitstatus_to_exitcode(status)
sys.exit(code if code >= 0 else 128 - code)
"""


def run_measured(cmd: list[str], log: Path, env: dict[str, str] | None = None) -> Measured:
    """Run ``cmd`` (absolute executable path first) as a measured child: its ``wait4`` rusage
    (CPU of it and its reaped workers, peak RSS of its largest process) via a small launcher, a
    sampled RSS sum over its process tree, and the CPU other processes used meanwhile."""
    try:
        import psutil
    except ImportError:  # pragma: no cover - psutil comes with accelerate
        psutil = None
    peak = [0]
    stop = threading.Event()
    usage = log.with_suffix(".rusage.json")
    usage.unlink(missing_ok=True)
    launcher = [sys.executable, "-S", "-c", _LAUNCHER, str(usage), *cmd]
    busy0 = _busy_cpu_s()
    t0 = time.perf_counter()
    with open(log, "w", encoding="utf-8") as out:
        proc = subprocess.Popen(launcher, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=REPO)

        def sample() -> None:
            assert psutil is not None
            try:
                root = psutil.Process(proc.pid)
            except psutil.Error:
                return
            while not stop.is_set():
                try:
                    total = 0
                    for p in root.children(recursive=True):  # not the launcher itself
                        with contextlib.suppress(psutil.Error):
                            total += p.memory_info().rss
                    peak[0] = max(peak[0], total // 1024)
                except psutil.Error:
                    pass
                stop.wait(0.2)

        th = threading.Thread(target=sample, daemon=True) if psutil else None
        if th:
            th.start()
        rc = proc.wait()
        wall = time.perf_counter() - t0
        stop.set()
        if th:
            th.join()
    busy1 = _busy_cpu_s()
    ru = json.loads(usage.read_text()) if usage.exists() else {"maxrss_kb": 0, "cpu_s": 0.0}
    cpu = ru["cpu_s"]
    other = None
    if busy0 is not None and busy1 is not None and wall > 0:
        other = max(0.0, (busy1 - busy0 - cpu) / wall)
    return Measured(rc, wall, cpu, ru["maxrss_kb"], peak[0] if psutil else None, other)


def _busy_cpu_s() -> float | None:
    """Machine-wide busy CPU seconds so far (/proc/stat): to see whether other work (tests, a
    second benchmark) competed for the cores while a timed child ran."""
    try:
        with open("/proc/stat", encoding="ascii") as f:
            fields = f.readline().split()[1:]
        ticks = [int(x) for x in fields]
        idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)  # idle + iowait
        return (sum(ticks[:8]) - idle) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def _stage_label(desc: str) -> str:
    if desc.startswith("PHI gate"):
        return "phi_gate"
    if " <- " in desc:
        return "task:" + desc.split(" <- ")[0]
    return desc.split(" ")[0]


# Functions of clinitune.data.prepare timed as stages when they exist (they hold no tracked loop).
_TIMED_FUNCTIONS = ("_link", "_merge_tokens", "write_data_card")


def prepare_child(argv: list[str], times_path: Path) -> int:
    """Child process: the clinitune typer app, with ``clinitune.progress.track`` / ``bar`` and a
    few prepare functions wrapped to time each stage (best effort: prepare's internals are being
    restructured; work done in worker processes is timed by the bar that waits for it)."""
    t_start = time.perf_counter()
    import clinitune.progress as progress

    times: dict[str, float] = defaultdict(float)
    orig_track, orig_bar = progress.track, getattr(progress, "bar", None)

    def timed_track(it: Any, desc: str, total: int | None = None, unit: str = "it") -> Any:
        label = _stage_label(desc)
        t0 = time.perf_counter()
        try:
            yield from orig_track(it, desc, total=total, unit=unit)
        finally:
            times[label] += time.perf_counter() - t0

    def timed_bar(desc: str, total: int | None = None, unit: str = "it") -> Any:
        assert orig_bar is not None
        b = orig_bar(desc, total=total, unit=unit)
        label, t0, close, done = _stage_label(desc), time.perf_counter(), b.close, [False]

        def timed_close() -> Any:
            if not done[0]:
                done[0] = True
                times[label] += time.perf_counter() - t0
            return close()

        b.close = timed_close
        return b

    def timed_function(name: str, fn: Any) -> Any:
        def wrapper(*a: Any, **k: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                times[name.lstrip("_")] += time.perf_counter() - t0

        return wrapper

    # Modules that import these later get the wrappers; already imported ones are patched.
    progress.track = timed_track
    if orig_bar is not None:
        progress.bar = timed_bar
    for mod in list(sys.modules.values()):
        if getattr(mod, "__name__", "").startswith("clinitune."):
            if getattr(mod, "track", None) is orig_track:
                mod.track = timed_track  # type: ignore[attr-defined]
            if orig_bar is not None and getattr(mod, "bar", None) is orig_bar:
                mod.bar = timed_bar  # type: ignore[attr-defined]
    import clinitune.data.prepare as prep_mod

    for name in _TIMED_FUNCTIONS:
        if callable(getattr(prep_mod, name, None)):
            setattr(prep_mod, name, timed_function(name, getattr(prep_mod, name)))
    from clinitune.cli import app

    rc = 0
    try:
        app(args=argv, prog_name="clinitune")
    except SystemExit as e:
        rc = int(e.code or 0) if not isinstance(e.code, str) else 1
    finally:
        total = time.perf_counter() - t_start
        times_path.write_text(
            json.dumps({"in_process_total_s": total, "stages_s": dict(times)}), encoding="utf-8"
        )
    return rc


def source_state() -> dict[str, Any]:
    """Which clinitune code ran: HEAD plus a hash of the working tree's package sources (the
    package is edited while benchmarks run; sizes measured on different code are flagged)."""
    import hashlib

    root = Path(sys.modules["clinitune"].__file__ or ".").parent
    h = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        h.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    head = None
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
        ).stdout.strip()
    return {"git_head": head or None, "package_sources_sha256": h.hexdigest()[:16]}


def run_prepare(recipe: Path, run_dir: Path, args: argparse.Namespace, log: Path) -> dict:
    sets: list[str] = []
    workers_field = workers_supported()
    if workers_field and args.workers is not None:
        sets += ["--set", f"data.workers={args.workers}"]
    cli = ["prepare", str(recipe), "--run-dir", str(run_dir), "--force", *sets]
    times_path = run_dir.parent / "stage_times.json"
    times_path.unlink(missing_ok=True)
    if args.plain_cli:
        exe = Path(sys.executable).parent / "clinitune"
        if exe.exists():
            cmd = [str(exe), *cli]
        else:
            cmd = [sys.executable, "-c", "import sys; from clinitune.cli import app; app()", *cli]
    else:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--prepare-child", str(times_path)]
        cmd += ["--", *cli]
    env = {**os.environ, "CLINITUNE_PROGRESS": "0"}
    code_before = source_state()
    m = run_measured(cmd, log, env)
    code = source_state()
    if code != code_before:
        code["changed_during_run"] = True
    if m.rc != 0:
        tail = log.read_text(encoding="utf-8", errors="replace")[-3000:]
        raise RuntimeError(f"prepare failed (rc {m.rc}); log {log}:\n{tail}")
    stage = json.loads(times_path.read_text()) if times_path.exists() else None
    cores_used = None
    if workers_field and args.workers is not None:
        cores_used = args.workers if args.workers > 0 else (os.cpu_count() or 1)
    return {
        "command": " ".join(cmd),
        "code": code,
        "workers_field": workers_field,
        "workers": args.workers if workers_field else None,
        "tasks": args.tasks,
        "cores": cores_used or (os.cpu_count() or 1),
        "wall_s": round(m.wall_s, 2),
        "cpu_s": round(m.cpu_s, 2),
        "maxrss_kb": m.maxrss_kb,
        "tree_rss_kb": m.tree_rss_kb,
        "other_cpu_cores": None if m.other_cpu_cores is None else round(m.other_cpu_cores, 2),
        "stage_times": stage,
    }


# =============================================================================================
# Evaluation
# =============================================================================================
J_BINS = [(0.85, 0.90), (0.90, 0.95), (0.95, 1.0)]


def _jbin(j: float) -> str:
    for lo, hi in J_BINS:
        if lo <= j < hi:
            return f"[{lo:.2f},{hi:.2f})"
    return "other"


def eval_dedup(
    clusters: list[list[str]], dropped: set[str], ds: Dataset, redacted_j: dict | None = None
) -> dict[str, Any]:
    """Recall on planted pairs (both notes in one cluster) and precision of the dropped notes
    (each must have a planted copy / original of its own in its cluster)."""
    cluster_of: dict[str, int] = {}
    for ci, members in enumerate(clusters):
        for nid in members:
            cluster_of[nid] = ci
    by_kind: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    by_bin: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    by_edit: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    missed: list[dict[str, Any]] = []
    for p in ds.pairs:
        ca, cb = cluster_of.get(p["a"]), cluster_of.get(p["b"])
        ok = ca is not None and ca == cb
        for d, key in ((by_kind, p["kind"]), (by_edit, f"{p['kind']}:{p['edit']}")):
            d[key][0] += ok
            d[key][1] += 1
        if p["kind"] == "near":
            by_bin[_jbin(p["jaccard"])][0] += ok
            by_bin[_jbin(p["jaccard"])][1] += 1
        if not ok:
            m = {k: p[k] for k in ("a", "b", "kind", "edit", "jaccard")}
            if redacted_j is not None:
                m["jaccard_redacted"] = redacted_j.get((p["a"], p["b"]))
            missed.append(m)
    found = sum(v[0] for v in by_kind.values())
    total = sum(v[1] for v in by_kind.values())
    correct, wrong = 0, []
    for d in dropped:
        ci = cluster_of.get(d)
        members = clusters[ci] if ci is not None else []
        if any(m != d and ds.groups[m] == ds.groups[d] for m in members):
            correct += 1
        else:
            wrong.append((d, members))
    by_id = {row["note_id"]: row["text"] for row in ds.rows}
    fp_j = []
    for d, members in wrong[:200]:  # diagnostics: how similar were the falsely merged notes?
        sd = shingles(by_id[d])
        others = [m for m in members if m != d]
        fp_j.append(max((jaccard(sd, shingles(by_id[m])) for m in others), default=0.0))

    def rate(v: list[int]) -> dict[str, Any]:
        return {"found": v[0], "total": v[1], "recall": round(v[0] / v[1], 4) if v[1] else None}

    return {
        "recall": round(found / total, 4) if total else None,
        "found": found,
        "planted_pairs": total,
        "by_kind": {k: rate(v) for k, v in sorted(by_kind.items())},
        "near_by_jaccard": {k: rate(v) for k, v in sorted(by_bin.items())},
        "by_edit": {k: rate(v) for k, v in sorted(by_edit.items())},
        "dropped": len(dropped),
        "dropped_correct": correct,
        "precision": round(correct / len(dropped), 4) if dropped else None,
        "clusters": len(clusters),
        "false_drops": len(wrong),
        "false_drop_max_jaccard": [round(x, 3) for x in sorted(fp_j, reverse=True)[:20]],
        "missed_pairs": missed[:50],
    }


def read_prepare_clusters(prepared: Path) -> tuple[list[list[str]], set[str]]:
    clusters: list[list[str]] = []
    dropped: set[str] = set()
    with open(prepared / "dedup_clusters.jsonl", encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            c = json.loads(line)
            members = [m["note_id"] for m in c["members"]]
            clusters.append([c["survivor"]["note_id"], *members])
            dropped.update(members)
    return clusters, dropped


_PLACEHOLDER = re.compile(r"\[([A-Z][A-Z0-9_]*)\]")


def _occurs(value: str, text: str, word: bool) -> bool:
    """``value`` in ``text``, not glued to a letter (names) or digit (numbers) on either side."""
    i = text.find(value)
    n = len(value)
    while i >= 0:
        before = text[i - 1] if i > 0 else " "
        after = text[i + n] if i + n < len(text) else " "
        if word:
            ok = not (before.isalpha() or after.isalpha())
        else:
            ok = not (
                (value[0].isdigit() and before.isdigit())
                or (value[-1].isdigit() and after.isdigit())
            )
        if ok:
            return True
        i = text.find(value, i + 1)
    return False


def eval_phi(prepared: Path, ds: Dataset, phi_types: set[str]) -> dict[str, Any]:
    """Planted identifiers still verbatim in the records of their note (after redaction)."""
    leaked: dict[str, set[int]] = defaultdict(set)  # note -> indexes of leaked identifiers
    seen: set[str] = set()
    fp: Counter[str] = Counter()
    fp_notes: set[str] = set()
    clean_notes_checked: set[str] = set()
    n_records = 0
    for path in sorted((prepared / "records").glob("*.jsonl")):
        with open(path, encoding="utf-8") as f:
            for line in f:
                if not line.strip():
                    continue
                rec = json.loads(line)
                n_records += 1
                nid = rec["note_id"]
                seen.add(nid)
                text = "\n".join(
                    str(rec[k]) for k in ("instruction", "input", "completion", "text") if k in rec
                )
                planted = ds.idents.get(nid)
                if planted:
                    for k, ident in enumerate(planted):
                        if _occurs(ident.value, text, word=ident.type in ("NAME", "CITY")):
                            leaked[nid].add(k)
                elif rec.get("kind") == "text" or "text" in rec:  # the whole note (cpt record)
                    clean_notes_checked.add(nid)
                    for m in _PLACEHOLDER.finditer(text):
                        if m.group(1) in phi_types:
                            fp[m.group(1)] += 1
                            fp_notes.add(nid)
    by_type: dict[str, list[int]] = defaultdict(lambda: [0, 0])  # [leaked, checked]
    by_form: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    unchecked = 0
    for nid, planted in ds.idents.items():
        if nid not in seen:
            unchecked += len(planted)
            continue
        for k, ident in enumerate(planted):
            hit = k in leaked.get(nid, ())
            by_type[ident.type][0] += hit
            by_type[ident.type][1] += 1
            by_form[ident.form][0] += hit
            by_form[ident.form][1] += 1

    def row(v: list[int]) -> dict[str, Any]:
        return {
            "leaked": v[0],
            "checked": v[1],
            "recall": round(1 - v[0] / v[1], 4) if v[1] else None,
        }

    leaked_total = sum(v[0] for v in by_type.values())
    checked_total = sum(v[1] for v in by_type.values())
    claimed = {t: v for t, v in by_type.items() if t in phi_types}
    claimed_leaked = sum(v[0] for v in claimed.values())
    claimed_checked = sum(v[1] for v in claimed.values())
    return {
        "records": n_records,
        "notes_in_records": len(seen),
        "identifiers_checked": checked_total,
        "identifiers_unchecked": unchecked,
        "leaked": leaked_total,
        "recall_all": round(1 - leaked_total / checked_total, 4) if checked_total else None,
        "recall_clinitune_types": (
            round(1 - claimed_leaked / claimed_checked, 4) if claimed_checked else None
        ),
        "by_type": {k: row(v) for k, v in sorted(by_type.items())},
        "by_form": {k: row(v) for k, v in sorted(by_form.items())},
        "clean_notes_checked": len(clean_notes_checked),
        "false_positive_placeholders": dict(sorted(fp.items())),
        "clean_notes_with_placeholders": len(fp_notes),
    }


# =============================================================================================
# Peer comparison
# =============================================================================================
def _read_csv(path: Path) -> tuple[list[str], list[str]]:
    csv.field_size_limit(2**31 - 1)
    ids, texts = [], []
    with open(path, encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f):
            ids.append(row["note_id"])
            texts.append(row["text"])
    return ids, texts


def lsh_layout(threshold: float, num_perm: int) -> tuple[int, int]:
    """(bands, rows) that clinitune's MinHashLSH uses at this threshold / num_perm."""
    from datasketch import MinHashLSH

    from clinitune.data import dedup as dd

    weights = getattr(dd, "_LSH_WEIGHTS", (0.5, 0.5))
    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm, weights=weights)
    return lsh.b, lsh.r


def peer_child(which: str, csv_path: Path, result: Path, args: argparse.Namespace) -> None:
    ids, texts = _read_csv(csv_path)
    info: dict[str, Any] = {}
    if which == "clinitune":
        from clinitune.data.dedup import DedupConfig, dedup

        cfg = DedupConfig(threshold=args.threshold, num_perm=args.num_perm, shingle=args.shingle)
        t0 = time.perf_counter()
        res = dedup(texts, keys=[("ed", i) for i in ids], config=cfg)
        seconds = time.perf_counter() - t0
        clusters = [[ids[i] for i in c] for c in res.clusters]
        dropped = [ids[i] for i, k in enumerate(res.keep) if not k]
        info["config"] = {
            "threshold": cfg.threshold,
            "num_perm": cfg.num_perm,
            "shingle": cfg.shingle,
            "lsh_bands_rows": list(lsh_layout(args.threshold, args.num_perm)),
            "verification": "MinHash Jaccard estimate >= threshold",
        }
    elif which == "datatrove":
        clusters, dropped, seconds, info = _datatrove_dedup(ids, texts, args)
    else:
        raise SystemExit(f"unknown peer {which!r}")
    result.write_text(
        json.dumps({"seconds": seconds, "clusters": clusters, "dropped": dropped, **info}),
        encoding="utf-8",
    )


def _datatrove_dedup(
    ids: list[str], texts: list[str], args: argparse.Namespace
) -> tuple[list[list[str]], list[str], float, dict[str, Any]]:
    import importlib.metadata
    import struct

    from datatrove.data import Document
    from datatrove.pipeline.dedup.minhash import (
        MinhashConfig,
        MinhashDedupBuckets,
        MinhashDedupCluster,
        MinhashDedupSignature,
    )
    from datatrove.utils.hashing import HashConfig
    from datatrove.utils.text import TextNormConfig
    from datatrove.utils.word_tokenizers import WordTokenizer
    from loguru import logger

    logger.remove()  # datatrove logs every step at INFO

    class SplitTokenizer(WordTokenizer):
        """simplify_text already removed punctuation and collapsed whitespace: split on spaces
        (equivalent to a \\w+ regex tokenizer, without spaCy)."""

        def word_tokenize(self, text: str) -> list[str]:
            return text.split()

        def sent_tokenize(self, text: str) -> list[str]:
            return [text]

        def span_tokenize(self, text: str) -> list[tuple[int, int]]:
            return [(0, len(text))]

    bands, rows = lsh_layout(args.threshold, args.num_perm)
    cfg = MinhashConfig(
        n_grams=args.shingle,
        num_buckets=bands,
        hashes_per_bucket=rows,
        seed=1,
        norm_config=TextNormConfig(norm_numbers=False),
        hash_config=HashConfig(precision=64, hash_fc="xxhash"),
    )
    docs = [Document(text=t, id=i) for i, t in zip(ids, texts, strict=True)]
    work = Path(tempfile.mkdtemp(prefix="dt-minhash-", dir=args.tmp))
    try:
        import xxhash

        xx_major = int(xxhash.VERSION.split(".")[0])
        t0 = time.perf_counter()
        sig = MinhashDedupSignature(
            output_folder=str(work / "sigs"), config=cfg, language=SplitTokenizer()
        )
        if xx_major >= 4:  # datatrove 0.10 hashes str; xxhash >= 4 wants bytes
            sig._hash_func = lambda s: xxhash.xxh64_intdigest(s.encode("utf-8"))
        sig.run(docs, rank=0, world_size=1)
        t1 = time.perf_counter()
        buckets = MinhashDedupBuckets(
            input_folder=str(work / "sigs"), output_folder=str(work / "buckets"), config=cfg
        )
        for b in range(bands):
            buckets.run(None, rank=b, world_size=bands)
        t2 = time.perf_counter()
        cluster = MinhashDedupCluster(
            input_folder=str(work / "buckets"),
            output_folder=str(work / "remove"),
            config=cfg,
            save_cluster_id=True,
        )
        cluster.run(None, 0, 1)
        t3 = time.perf_counter()
        groups: dict[int, list[str]] = defaultdict(list)
        cpath = work / "remove" / "000000.clusters"
        if cpath.exists():
            data = cpath.read_bytes()
            for doc, cid in struct.iter_unpack("<2I", data):
                groups[cid].append(ids[doc])
        rpath = work / "remove" / "000000.remove"
        dropped = []
        if rpath.exists():
            dropped = [ids[d] for (d,) in struct.iter_unpack("<I", rpath.read_bytes())]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    info = {
        "version": importlib.metadata.version("datatrove"),
        "xxhash": xxhash.VERSION,
        "stage_s": {
            "signatures": round(t1 - t0, 2),
            "buckets": round(t2 - t1, 2),
            "cluster": round(t3 - t2, 2),
        },
        "config": {
            "n_grams": cfg.n_grams,
            "num_buckets": bands,
            "hashes_per_bucket": rows,
            "hash": "xxhash64" + (" (str utf-8 encoded)" if xx_major >= 4 else ""),
            "norm_numbers": False,
            "tokenizer": "whitespace split of simplify_text output",
            "verification": "none (every band collision is merged)",
        },
    }
    return list(groups.values()), dropped, t3 - t0, info


def run_peers(csv_path: Path, d: Path, ds: Dataset, args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for which in ("clinitune", "datatrove"):
        if which == "datatrove":
            try:
                import datatrove  # noqa: F401
            except ImportError:
                out[which] = {"error": "datatrove not installed (pip install -e '.[bench]')"}
                continue
        result = d / f"peer_{which}.json"
        cmd = [sys.executable, str(Path(__file__).resolve()), "--peer-child", which]
        cmd += ["--csv", str(csv_path), "--peer-result", str(result)]
        cmd += ["--threshold", str(args.threshold), "--shingle", str(args.shingle)]
        cmd += ["--num-perm", str(args.num_perm), "--tmp", str(args.tmp)]
        m = run_measured(cmd, d / f"peer_{which}.log")
        if m.rc != 0:
            tail = (d / f"peer_{which}.log").read_text(errors="replace")[-2000:]
            out[which] = {"error": f"rc {m.rc}: {tail}"}
            continue
        res = json.loads(result.read_text())
        ev = eval_dedup(res["clusters"], set(res["dropped"]), ds)
        n = len(ds.rows)
        out[which] = {
            "seconds": round(res["seconds"], 2),
            "notes_per_s": round(n / res["seconds"], 1),
            "maxrss_kb": m.maxrss_kb,
            "other_cpu_cores": m.other_cpu_cores and round(m.other_cpu_cores, 2),
            "recall": ev["recall"],
            "precision": ev["precision"],
            "dropped": ev["dropped"],
            "by_kind": ev["by_kind"],
            "near_by_jaccard": ev["near_by_jaccard"],
            "false_drop_max_jaccard": ev["false_drop_max_jaccard"][:5],
            **{k: v for k, v in res.items() if k not in ("clusters", "dropped", "seconds")},
        }
    a, b = out.get("clinitune", {}), out.get("datatrove", {})
    if "notes_per_s" in a and "notes_per_s" in b:
        out["speed_ratio_clinitune_over_datatrove"] = round(a["notes_per_s"] / b["notes_per_s"], 2)
    return out


# =============================================================================================
# Reporting
# =============================================================================================
def _gb(kb: int | None) -> str:
    return "n/a" if kb is None else f"{kb / 1024 / 1024:.2f} GB"


def _check(value: float | None, target: float, higher_is_better: bool = True) -> str:
    if value is None:
        return ""
    ok = value >= target if higher_is_better else value <= target
    return "ok" if ok else "MISS"


def print_size(res: dict[str, Any]) -> None:
    st, prep, dd, phi = res["data"], res["prepare"], res["dedup"], res["phi"]
    sim = res["unrelated_jaccard"]
    n = st["notes"]
    print()
    print(f"== N = {n:,} notes  ({st['patients']:,} patients, mean {st['mean_chars']:,} chars;")
    print(
        f"   planted: {st['exact_pairs']:,} exact + {st['near_pairs']:,} near duplicate pairs, "
        f"{st['identifiers']:,} identifiers in {st['notes_with_identifiers']:,} notes)"
    )
    rp, sp = sim["random_pairs"], sim["same_patient_pairs"]
    print(
        f"   unrelated-note word-5-gram Jaccard: random pairs mean {rp['mean']:.3f} / p99 "
        f"{rp['p99']:.3f} / max {rp['max']:.3f}; same-patient pairs mean "
        f"{sp.get('mean', 0):.3f} / max {sp.get('max', 0):.3f}"
    )
    nj = res["near_pair_jaccard"]
    print(
        f"   near pairs' true Jaccard: raw min {nj['raw_min']:.3f} / mean {nj['raw_mean']:.3f}; "
        f"after redaction min {nj['redacted_min']:.3f} / mean {nj['redacted_mean']:.3f}"
    )
    workers = (
        f"tasks {prep.get('tasks', 'mdm+cpt')}; data.workers={prep['workers']}"
        if prep["workers_field"]
        else "no data.workers field in the recipe schema: single process"
    )
    cores = prep["cores"]
    rows = [
        ("prepare wall time", f"{prep['wall_s']:.1f} s", "", ""),
        ("notes/s", f"{res['notes_per_s']:.1f}", "", ""),
        (
            f"notes/s per core ({cores} cores)",
            f"{res['notes_per_s_per_core']:.1f}",
            f">= {TARGETS['notes_per_s_per_core']:.0f}",
            _check(res["notes_per_s_per_core"], TARGETS["notes_per_s_per_core"]),
        ),
        (
            "child CPU time / wall",
            f"{prep['cpu_s']:.1f} s / {prep['cpu_s'] / prep['wall_s']:.2f}",
            "",
            "",
        ),
        (
            "other processes' CPU meanwhile",
            "n/a" if prep["other_cpu_cores"] is None else f"{prep['other_cpu_cores']:.2f} cores",
            "",
            "(shared machine: > 0.1 means contended timings)"
            if (prep["other_cpu_cores"] or 0) > 0.1
            else "",
        ),
        ("peak RSS (wait4, largest process)", _gb(prep["maxrss_kb"]), "", ""),
        ("peak RSS (process tree, sampled)", _gb(prep["tree_rss_kb"]), "", ""),
        (
            "dedup recall (planted pairs)",
            f"{dd['recall']:.4f} ({dd['found']}/{dd['planted_pairs']})",
            f">= {TARGETS['dedup_recall']}",
            _check(dd["recall"], TARGETS["dedup_recall"]),
        ),
        (
            "dedup precision (dropped notes)",
            f"{dd['precision']:.4f} ({dd['dropped_correct']}/{dd['dropped']})"
            if dd["precision"] is not None
            else "n/a (nothing dropped)",
            f">= {TARGETS['dedup_precision']}",
            _check(dd["precision"], TARGETS["dedup_precision"]),
        ),
        (
            "PHI recall, clinitune's types",
            f"{phi['recall_clinitune_types']:.4f}",
            "",
            "",
        ),
    ]
    code = prep.get("code", {})
    print(
        f"   prepare: {workers}; clinitune HEAD {code.get('git_head')} + working tree "
        f"{code.get('package_sources_sha256')}"
        + ("  (package sources CHANGED during the run)" if code.get("changed_during_run") else "")
    )
    w = max(len(r[0]) for r in rows) + 2
    print(f"   {'metric':<{w}}{'value':<28}{'target':<10}")
    for name, val, tgt, ok in rows:
        print(f"   {name:<{w}}{val:<28}{tgt:<10}{ok}")
    stage = prep.get("stage_times")
    if stage:
        tracked = stage["stages_s"]
        other = stage["in_process_total_s"] - sum(tracked.values())
        parts = ", ".join(f"{k} {v:.1f}" for k, v in sorted(tracked.items(), key=lambda x: -x[1]))
        print(
            f"   stage seconds (in the child): {parts}; other (imports, setup, untracked) "
            f"{other:.1f}"
        )
    kinds = ", ".join(f"{k} {v['found']}/{v['total']}" for k, v in dd["by_kind"].items())
    bins = ", ".join(f"J{k} {v['found']}/{v['total']}" for k, v in dd["near_by_jaccard"].items())
    print(f"   dedup found by kind: {kinds}; near by raw Jaccard: {bins}")
    if dd["false_drops"]:
        print(
            f"   dedup false drops: {dd['false_drops']} (max true Jaccard to a cluster mate: "
            f"{dd['false_drop_max_jaccard'][:5]})"
        )
    if dd["missed_pairs"]:
        ex = ", ".join(
            f"{m['kind']}:{m['edit']} J={m['jaccard']}"
            + (f"/{m['jaccard_redacted']}" if m.get("jaccard_redacted") is not None else "")
            for m in dd["missed_pairs"][:6]
        )
        print(f"   missed pairs (first): {ex}")
    print(
        f"   PHI (end to end, {phi['identifiers_checked']:,} identifiers checked in "
        f"{phi['notes_in_records']:,} notes' records; {phi['identifiers_unchecked']} unchecked "
        "in dropped notes):"
    )
    for t, v in phi["by_type"].items():
        extra = "" if t in res["phi_types"] else "   (not a clinitune PHI type)"
        print(
            f"     {t:<8} leaked {v['leaked']:>5} / {v['checked']:<6} "
            f"recall {v['recall']:.4f}{extra}"
        )
    bad = {k: v for k, v in phi["by_form"].items() if v["leaked"]}
    if bad:
        print(
            "     leaks by form: "
            + "; ".join(
                f"{k} {v['leaked']}/{v['checked']}"
                for k, v in sorted(bad.items(), key=lambda x: -x[1]["leaked"])
            )
        )
    print(
        f"     placeholders in the {phi['clean_notes_checked']:,} identifier-free notes (false "
        f"positives): {phi['false_positive_placeholders'] or 'none'} in "
        f"{phi['clean_notes_with_placeholders']} notes"
    )
    peers = res.get("peers")
    if peers:
        print("   peer dedup on the same raw texts (one process each):")
        print(
            f"     {'impl':<11}{'seconds':>9}{'notes/s':>10}{'recall':>9}"
            f"{'precision':>11}{'peak RSS':>11}"
        )
        for which in ("clinitune", "datatrove"):
            p = peers.get(which, {})
            if "error" in p:
                print(f"     {which:<11}error: {p['error'][:200]}")
                continue
            if not p:
                continue
            prec = "n/a" if p["precision"] is None else f"{p['precision']:.4f}"
            print(
                f"     {which:<11}{p['seconds']:>9.2f}{p['notes_per_s']:>10.1f}{p['recall']:>9.4f}"
                f"{prec:>11}{_gb(p['maxrss_kb']):>11}"
            )
        loads = [
            f"{w} {peers[w]['other_cpu_cores']:.2f}"
            for w in ("clinitune", "datatrove")
            if peers.get(w, {}).get("other_cpu_cores") is not None
        ]
        if loads:
            print(f"     other processes' CPU meanwhile (cores): {', '.join(loads)}")
        if "speed_ratio_clinitune_over_datatrove" in peers:
            print(
                "     speed ratio clinitune / datatrove: "
                f"{peers['speed_ratio_clinitune_over_datatrove']}x"
            )


# =============================================================================================
# Main
# =============================================================================================
def bench_size(n: int, args: argparse.Namespace) -> dict[str, Any]:
    from clinitune.data.phi import PHI_TYPES

    d = Path(args.workdir) / f"n{n}"
    if d.exists():
        shutil.rmtree(d)
    d.mkdir(parents=True)
    t0 = time.perf_counter()
    ds = generate(n, args.seed)
    csv_path = write_dataset(ds, d)
    gen_s = time.perf_counter() - t0
    print(f"[n={n}] generated {n:,} notes in {gen_s:.1f}s -> {csv_path}", flush=True)
    sim = unrelated_similarity(ds, args.seed)
    red_j = redacted_pair_jaccard(ds)
    raw = [p["jaccard"] for p in ds.pairs if p["kind"] == "near"]
    near_j = {
        "raw_min": min(raw),
        "raw_mean": round(statistics.fmean(raw), 4),
        "redacted_min": min(red_j.values()),
        "redacted_mean": round(statistics.fmean(red_j.values()), 4),
        "redacted_below_threshold": sum(v < args.threshold for v in red_j.values()),
    }
    for p in ds.pairs:
        if p["kind"] == "near":
            p["jaccard_redacted"] = red_j[(p["a"], p["b"])]
    recipe = write_recipe(d, csv_path, args)
    run_dir = d / "run"
    print(f"[n={n}] clinitune prepare ...", flush=True)
    prep = run_prepare(recipe, run_dir, args, d / "prepare.log")
    print(f"[n={n}] prepare done in {prep['wall_s']:.1f}s; evaluating", flush=True)
    prepared = run_dir / "prepared"
    manifest = json.loads((prepared / "manifest.json").read_text())
    counts = manifest.get("counts", {})
    clusters, dropped = read_prepare_clusters(prepared)
    dd = eval_dedup(clusters, dropped, ds, red_j)
    phi = eval_phi(prepared, ds, set(PHI_TYPES))
    res: dict[str, Any] = {
        "n": n,
        "data": ds.stats,
        "generation_s": round(gen_s, 1),
        "unrelated_jaccard": sim,
        "near_pair_jaccard": near_j,
        "prepare": prep,
        "notes_per_s": n / prep["wall_s"],
        "notes_per_s_per_core": n / prep["wall_s"] / prep["cores"],
        "dedup": dd,
        "phi": phi,
        "phi_types": list(PHI_TYPES),
        "manifest_counts": {k: counts.get(k) for k in ("phi", "dedup", "tasks", "split")},
        "paths": {"dir": str(d), "csv": str(csv_path), "recipe": str(recipe), "run": str(run_dir)},
    }
    if not args.no_peer:
        print(f"[n={n}] peer dedup comparison ...", flush=True)
        res["peers"] = run_peers(csv_path, d, ds, args)
    if args.clean:
        shutil.rmtree(run_dir, ignore_errors=True)
    return res


def warm_model_cache() -> float:
    """Import the embedded model once (cached afterwards) so no timed run pays for it."""
    t0 = time.perf_counter()
    code = f"from clinitune.models import resolve_model; resolve_model({MODEL!r})"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--prepare-child"]:
        rest = argv[2:]
        if rest[:1] == ["--"]:
            rest = rest[1:]
        return prepare_child(rest, Path(argv[1]))
    ap = argparse.ArgumentParser(
        description="Benchmark clinitune prepare on synthetic ED notes (see module docstring)."
    )
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--quick", action="store_true", help="one small size (2,000 notes)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--workdir", default=str(Path(tempfile.gettempdir()) / "clinitune-prepare-bench")
    )
    ap.add_argument("--out", default=None, help="results JSON (default <workdir>/results.json)")
    ap.add_argument(
        "--workers",
        type=int,
        default=0,
        help="data.workers for prepare (0 = all cores), passed only if the recipe schema has it",
    )
    ap.add_argument(
        "--tasks",
        choices=["mdm+cpt", "cpt", "mdm"],
        default="cpt",
        help="task builders per note (default cpt: every stage the target names runs, packing "
        "included, and every kept note's identifiers are checkable); mdm+cpt tokenizes each "
        "note twice (~1,150 tokens)",
    )
    ap.add_argument("--threshold", type=float, default=0.8)
    ap.add_argument("--shingle", type=int, default=SHINGLE)
    ap.add_argument("--num-perm", type=int, default=128)
    ap.add_argument("--no-peer", action="store_true", help="skip the datatrove comparison")
    ap.add_argument(
        "--plain-cli", action="store_true", help="run the console script (no stage times)"
    )
    ap.add_argument("--clean", action="store_true", help="delete each run directory afterwards")
    ap.add_argument("--tmp", default=tempfile.gettempdir(), help=argparse.SUPPRESS)
    ap.add_argument("--peer-child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--csv", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--peer-result", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.peer_child:
        peer_child(args.peer_child, Path(args.csv), Path(args.peer_result), args)
        return 0
    if args.quick:
        args.sizes = [2000]
    Path(args.workdir).mkdir(parents=True, exist_ok=True)
    out = Path(args.out) if args.out else Path(args.workdir) / "results.json"

    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
        f"; workdir {args.workdir}",
        flush=True,
    )
    warm = warm_model_cache()
    print(f"tokenizer/model cache ready in {warm:.1f}s (not timed)", flush=True)
    results: dict[str, Any] = {
        "benchmark": "benchmarks/prepare_bench.py",
        "argv": argv,
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": {
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "targets": TARGETS,
        "sizes": {},
    }
    for n in args.sizes:
        res = bench_size(n, args)
        results["sizes"][str(n)] = res
        print_size(res)
        out.write_text(json.dumps(results, indent=1, default=str), encoding="utf-8")
    if len(args.sizes) > 1:
        lo, hi = min(args.sizes), max(args.sizes)
        r_lo, r_hi = results["sizes"][str(lo)], results["sizes"][str(hi)]
        ratio = r_hi["prepare"]["maxrss_kb"] / r_lo["prepare"]["maxrss_kb"]
        tree = None
        if r_hi["prepare"]["tree_rss_kb"] and r_lo["prepare"]["tree_rss_kb"]:
            tree = r_hi["prepare"]["tree_rss_kb"] / r_lo["prepare"]["tree_rss_kb"]
        codes = {r["prepare"]["code"]["package_sources_sha256"] for r in results["sizes"].values()}
        if len(codes) > 1:
            print("\nWARNING: the sizes ran on different clinitune sources (edited meanwhile)")
            results["warning"] = "sizes ran on different clinitune sources"
        results["rss_ratio"] = {
            "sizes": [hi, lo],
            "wait4": round(ratio, 2),
            "tree_sampled": round(tree, 2) if tree else None,
            "target": TARGETS["rss_ratio"],
        }
        print()
        print(
            f"RSS ratio {hi:,}/{lo:,}: {ratio:.2f} (wait4)"
            + (f", {tree:.2f} (process tree)" if tree else "")
            + f"   target <= {TARGETS['rss_ratio']}  {_check(ratio, TARGETS['rss_ratio'], False)}"
        )
    out.write_text(json.dumps(results, indent=1, default=str), encoding="utf-8")
    print(f"\nresults: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
